//! `SDLAB_CUDA_RUNPATH=DIR[:DIR...]` at build time becomes the binary's RUNPATH, so a CUDA build
//! carried to a GPU box finds cuBLAS, cuRAND and the CUDA runtime where that box keeps them
//! (its Python venv's wheels) without LD_LIBRARY_PATH, which still comes first when set.
//! Without the variable the binary is what it would be without this script.

fn main() {
    println!("cargo:rerun-if-env-changed=SDLAB_CUDA_RUNPATH");
    if let Some(dirs) = std::env::var_os("SDLAB_CUDA_RUNPATH").filter(|dirs| !dirs.is_empty()) {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{}", dirs.to_string_lossy());
    }
}
