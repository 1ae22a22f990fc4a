//! Files read only when they are what they claim to be (a regular file of a sane
//! size), and written so that a crash or a full disk never leaves half of one behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// Size caps for files read whole: a hostile or broken file is refused before it
/// is read, not after it filled the memory.
pub mod limits {
    /// A model's `config.json`, `scheduler_config.json`, `tokenizer_config.json`.
    pub const CONFIG: u64 = 16 << 20;
    /// A tokenizer's `vocab.json`, `merges.txt`, `tokenizer.json`.
    pub const TOKENIZER: u64 = 64 << 20;
    /// A session's `session.json` (about 7 KB per step, most of it generator states).
    pub const SESSION_JSON: u64 = 64 << 20;
    /// A PNG given to `resume` or `tui --replay` (only its text chunks are used).
    pub const PNG: u64 = 256 << 20;
}

/// Reads all of `path`, which must be a regular file (or a link to one) of at most
/// `max` bytes: a folder, FIFO, device or socket is refused without blocking, and a
/// file that is too big without reading it.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let size = file.metadata().map_err(|e| anyhow!("{}: cannot read ({e})", path.display()))?.len();
    if size > max {
        bail!("{}: {size} bytes, more than the {max} this file may have", path.display());
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // `take` also stops a file that grows while it is read.
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| anyhow!("{}: cannot read ({e})", path.display()))?;
    if bytes.len() as u64 > max {
        bail!("{}: grew past the {max} bytes this file may have while it was read", path.display());
    }
    Ok(bytes)
}

/// [`read_regular`] of a UTF-8 text file.
pub fn read_text(path: &Path, max: u64) -> Result<String> {
    String::from_utf8(read_regular(path, max)?).map_err(|_| anyhow!("{}: not UTF-8 text", path.display()))
}

/// Opens `path` for reading if it is a regular file. `O_NONBLOCK` keeps a FIFO from
/// blocking the open; the type is then checked on what was opened, not on the name.
pub fn open_regular(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| anyhow!("{}: cannot read ({e})", path.display()))?;
    let kind = file.metadata().map_err(|e| anyhow!("{}: cannot read ({e})", path.display()))?.file_type();
    if !kind.is_file() {
        bail!("{}: expected a regular file, found {}", path.display(), describe_kind(kind));
    }
    Ok(file)
}

/// What a non-regular file is, in words.
pub fn describe_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a folder"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "a regular file"
    }
}

/// Writes `bytes` to `path` so that readers see the old file or the new one, never
/// a torn one: a temporary file beside the target, synced, then renamed over it.
///
/// Only a regular file (or nothing) is replaced: a folder, FIFO, device or socket
/// is refused, and a symbolic link is written through to what it points at. A new
/// file gets the usual `0666` less the umask; a replaced one keeps its mode.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let (target, existing) = output_target(path)?;
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".sdlab-")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    if let Some(mode) = existing {
        // fchmod is not masked by the umask: the file keeps exactly the mode it had.
        tmp.as_file().set_permissions(mode).with_context(|| format!("{}: cannot keep its mode", path.display()))?;
    }
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("{}: cannot write", path.display()))?;
    tmp.persist(&target).with_context(|| format!("{}: cannot replace the file", path.display()))?;
    sync_dir(dir)
}

/// Checks, before any work, that [`write_atomic`] could write `path`: a clash with
/// a FIFO or a folder is found in a second, not after a long run.
pub fn check_output(path: &Path) -> Result<()> {
    output_target(path).map(drop)
}

/// Where writing `path` lands (through its links), and the mode of the regular file
/// there, if one is; anything else there is refused.
fn output_target(path: &Path) -> Result<(PathBuf, Option<std::fs::Permissions>)> {
    let target = resolve_links(path)?;
    match std::fs::metadata(&target) {
        Ok(meta) if meta.is_file() => Ok((target, Some(meta.permissions()))),
        Ok(meta) => bail!(
            "{}: is {}; refusing to replace it with a file (name a file path)",
            path.display(),
            describe_kind(meta.file_type())
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((target, None)),
        Err(e) => bail!("{}: cannot write ({e})", path.display()),
    }
}

/// Where writing `path` lands: the end of its chain of symbolic links (which need
/// not exist yet), or `path` itself.
fn resolve_links(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    // Linux's own limit on links followed in one lookup.
    for _ in 0..40 {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = std::fs::read_link(&current)
                    .with_context(|| format!("{}: cannot read the link", path.display()))?;
                current = match current.parent() {
                    Some(parent) if link.is_relative() => parent.join(link),
                    _ => link,
                };
            }
            _ => return Ok(current),
        }
    }
    bail!("{}: too many levels of symbolic links", path.display())
}

/// Makes a rename or a new entry in `dir` survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).with_context(|| format!("{}: cannot sync the folder", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.bin");
        write_atomic(&path, b"first version, longer").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec!["out.bin"]);
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
    }

    fn mkfifo(path: &Path) {
        assert!(std::process::Command::new("mkfifo").arg(path).status().unwrap().success());
    }

    #[test]
    fn new_files_honour_the_umask_and_replaced_ones_keep_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.png");
        write_atomic(&fresh, b"x").unwrap();
        assert_eq!(mode(&fresh), 0o666 & !umask());
        let shared = dir.path().join("shared.png");
        std::fs::write(&shared, b"old").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o664)).unwrap();
        write_atomic(&shared, b"new").unwrap();
        assert_eq!((mode(&shared), std::fs::read(&shared).unwrap()), (0o664, b"new".to_vec()));
    }

    #[test]
    fn a_symbolic_link_is_written_through_and_stays_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real/out.png");
        let link = dir.path().join("link.png");
        std::os::unix::fs::symlink("real/out.png", &link).unwrap();
        write_atomic(&link, b"through").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"through");
    }

    #[test]
    fn folders_fifos_and_link_loops_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        mkfifo(&fifo);
        let msg = write_atomic(&fifo, b"x").unwrap_err().to_string();
        assert!(msg.ends_with("pipe: is a FIFO; refusing to replace it with a file (name a file path)"), "{msg}");
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        let msg = write_atomic(dir.path(), b"x").unwrap_err().to_string();
        assert!(msg.contains("is a folder; refusing"), "{msg}");
        let looped = dir.path().join("loop");
        std::os::unix::fs::symlink("loop", &looped).unwrap();
        let msg = write_atomic(&looped, b"x").unwrap_err().to_string();
        assert!(msg.ends_with("loop: too many levels of symbolic links"), "{msg}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    #[test]
    fn reads_refuse_what_is_not_a_regular_file_of_a_sane_size() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("session.json");
        mkfifo(&fifo);
        // Would block forever if the FIFO were opened for a plain read.
        let msg = read_regular(&fifo, 100).unwrap_err().to_string();
        assert!(msg.ends_with("session.json: expected a regular file, found a FIFO"), "{msg}");
        let msg = read_regular(dir.path(), 100).unwrap_err().to_string();
        assert!(msg.ends_with("expected a regular file, found a folder"), "{msg}");
        let msg = read_regular(Path::new("/dev/zero"), 100).unwrap_err().to_string();
        assert_eq!(msg, "/dev/zero: expected a regular file, found a device");
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; 101]).unwrap();
        let msg = read_regular(&big, 100).unwrap_err().to_string();
        assert!(msg.ends_with("big.json: 101 bytes, more than the 100 this file may have"), "{msg}");
        assert_eq!(read_regular(&big, 101).unwrap().len(), 101);
    }
}
