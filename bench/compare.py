#!/usr/bin/env python3
"""sdlab vs diffusers, side by side, on the same model, size, steps, device, dtype and CPU threads.

Runs `sdlab bench --json` and bench/bench_diffusers.py (each in its own process, one after the other),
prints the machine and a markdown table of both tools' stage timings and peak memory, and with
--json-out saves both tools' raw JSON. Standard library only; diffusers runs under --python.

    python3 bench/compare.py --model /work/benchmodel --width 512 --height 512 --steps 20
    python3 bench/compare.py --model /tmp/benchmodel --device cuda --dtype f16 --sdlab .gpu/sdlab

How both are measured (sdlab bench's way; bench_diffusers.py is told --warmup --repeats R):
  - load: diffusers' from_pretrained + .to(device), sdlab's model::open (configs, tokenizer, weights on
    the device), not the interpreter's start or the imports; from a warm page cache (compare.py reads
    the model's files once first, unless --no-warm-cache);
  - every one-off stage (tokenize, text encode, VAE decode) runs once untimed, then R times: the minimum;
  - the guided step (UNet on the batch of 2 + guidance + DDIM step) runs once untimed on the first
    timestep, then once per timestep, each timed: STEPS times, all of them kept (the untimed warm-up is
    the only step left out, for both tools);
  - on CUDA both wait for the GPU before a clock starts and before it stops.
Threads: candle takes RAYON_NUM_THREADS (CANDLE_NUM_THREADS for its own pool, falling back to
RAYON_NUM_THREADS), else the number of physical cores that /proc/cpuinfo lists (num_cpus::get_physical,
which ignores CPU affinity and cgroup quotas). compare.py sets RAYON_NUM_THREADS, CANDLE_NUM_THREADS,
OMP_NUM_THREADS and MKL_NUM_THREADS to the same N for both, and passes N to torch.set_num_threads.
N defaults to what candle would pick, capped to the CPUs this process may use.
"""
import argparse
import ctypes
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def read(path):
    try:
        return Path(path).read_text()
    except OSError:
        return None


def cmd_out(cmd, **kw):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
        return r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# --- threads: what candle picks, and what this process may use ---------------------------------

def candle_default_threads():
    """candle-core 0.11's choice when no environment variable says: CANDLE_CPU_MASK's CPUs, else on
    big.LITTLE machines the fast cores, else num_cpus::get_physical() ("cpu cores" summed over the
    distinct "physical id"s of /proc/cpuinfo), else the logical CPUs."""
    v = os.environ.get("RAYON_NUM_THREADS", "")
    if v.isdigit() and int(v) > 0:
        return int(v), f"RAYON_NUM_THREADS={v}"
    mask = os.environ.get("CANDLE_CPU_MASK")
    if mask:
        cpus = set()
        for part in filter(None, (x.strip() for x in mask.split(","))):
            a, _, b = part.partition("-")
            cpus.update(range(int(a), int(b or a) + 1))
        return len(cpus), "CANDLE_CPU_MASK"
    caps = []
    for d in Path("/sys/devices/system/cpu").glob("cpu[0-9]*"):
        c = read(d / "cpu_capacity")
        if c and c.strip().isdigit():
            caps.append(int(c))
    if len(caps) >= 2 and max(caps) > 0 and min(caps) * 10 < max(caps) * 9:
        return sum(c * 10 >= max(caps) * 9 for c in caps), "fast cores (cpu_capacity)"
    cores, phys = {}, None
    for line in (read("/proc/cpuinfo") or "").splitlines():
        key, _, value = (x.strip() for x in line.partition(":"))
        if key == "physical id":
            phys = value
        elif key == "cpu cores" and value.isdigit():
            cores[phys] = int(value)
    n = sum(cores.values())
    return (n, "physical cores in /proc/cpuinfo") if n else (os.cpu_count() or 1, "logical CPUs")


def usable_cpus():
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = (read("/sys/fs/cgroup/cpu.max") or "").split()
    if len(quota) == 2 and quota[0] != "max":
        n = min(n, max(1, math.ceil(int(quota[0]) / int(quota[1]))))
    return n


# --- GPU memory: the GPU's used memory, sampled while a tool runs --------------------------------

class NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class GpuMemory:
    """Samples the GPU's used memory (NVML through ctypes, else nvidia-smi) in a thread while a tool
    runs; peak_mb is the highest value above what was used before the tool started. This sees
    everything the process holds on the GPU (CUDA context, allocator caches), the same way for both
    tools; a peak shorter than the sampling period can be missed."""

    def __init__(self, index=0):
        self.index, self.nvml, self.handle = index, None, None
        try:
            nvml = ctypes.CDLL("libnvidia-ml.so.1")
            if nvml.nvmlInit_v2() == 0:
                handle = ctypes.c_void_p()
                if nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) == 0:
                    self.nvml, self.handle = nvml, handle
        except OSError:
            pass
        self.smi = shutil.which("nvidia-smi") if self.nvml is None else None
        self.period = 0.005 if self.nvml else 0.1
        self.method = "NVML" if self.nvml else ("nvidia-smi" if self.smi else None)

    def used_mb(self):
        if self.nvml:
            m = NvmlMemory()
            if self.nvml.nvmlDeviceGetMemoryInfo(self.handle, ctypes.byref(m)) == 0:
                return m.used / 2**20
            return None
        out = cmd_out([self.smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits", f"--id={self.index}"])
        return float(out.splitlines()[0]) if out else None

    def __enter__(self):
        self.base = self.used_mb() or 0.0
        self.peak, self.stop = self.base, threading.Event()

        def sample():
            while not self.stop.is_set():
                used = self.used_mb()
                if used is not None:
                    self.peak = max(self.peak, used)
                time.sleep(self.period)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak_mb = self.peak - self.base


# --- machine --------------------------------------------------------------------------------------

def machine(args, python, threads_note):
    info = {}
    cpuinfo = read("/proc/cpuinfo") or ""
    info["cpu"] = next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name")), "?")
    info["logical_cpus"] = os.cpu_count()
    info["usable_cpus"] = usable_cpus()
    info["candle_default_threads"] = candle_default_threads()[0]
    mem = next((l.split()[1] for l in (read("/proc/meminfo") or "").splitlines() if l.startswith("MemTotal:")), None)
    info["ram_gb"] = round(int(mem) / 2**20, 1) if mem else None
    if shutil.which("nvidia-smi"):
        info["gpu"] = cmd_out(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"])
    code = ("import importlib.metadata as m, json\n"
            "def v(p):\n try: return m.version(p)\n except Exception: return None\n"
            "print(json.dumps({p: v(p) for p in ('torch', 'diffusers', 'transformers', 'accelerate')}))")
    versions = cmd_out([python, "-c", code])
    info["python_packages"] = json.loads(versions) if versions else None
    info["python"] = cmd_out([python, "-c", "import sys; print(sys.version.split()[0])"])
    info["sdlab_version"] = cmd_out([args.sdlab, "--version"]) if os.access(args.sdlab, os.X_OK) else None
    commit = cmd_out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    if commit and cmd_out(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    info["sdlab_commit"] = commit
    return info


def print_machine(info, threads, threads_note):
    pk = info.get("python_packages") or {}
    print("## Machine\n")
    print(f"- CPU: {info['cpu']}, {info['logical_cpus']} logical CPUs, {info['usable_cpus']} usable by this process, "
          f"candle's default thread count here: {info['candle_default_threads']}")
    print(f"- RAM: {info['ram_gb']} GB")
    if info.get("gpu"):
        print(f"- GPU: {info['gpu']}")
    print(f"- threads for both tools: {threads} ({threads_note})")
    print(f"- Python {info['python']}: torch {pk.get('torch')}, diffusers {pk.get('diffusers')}, "
          f"transformers {pk.get('transformers')}, accelerate {pk.get('accelerate') or 'absent'}")
    print(f"- sdlab: {info['sdlab_version'] or 'binary not found'}, commit {info['sdlab_commit'] or 'unknown'} "
          f"(of the checkout compare.py runs from; the binary may be built from another)")
    print()


# --- running the two tools ------------------------------------------------------------------------

def warm_page_cache(model):
    start, total = time.perf_counter(), 0
    for p in sorted(Path(model).rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                while chunk := f.read(1 << 24):
                    total += len(chunk)
    return total, time.perf_counter() - start


def run_tool(name, cmd, env, gpu, timeout):
    print(f"running {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    result = {"tool": name, "command": cmd}
    try:
        if gpu:
            with gpu:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            result["gpu_used_peak_mb"] = gpu.peak_mb
        else:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        result["error"] = f"{type(e).__name__}: {e}"
        print(f"{name} failed: {result['error']}", file=sys.stderr)
        return result
    result["wall_s"] = time.perf_counter() - start
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        result["error"] = f"exit status {proc.returncode}; stderr ends: {proc.stderr[-2000:]}"
        print(f"{name} failed ({proc.returncode}):\n{proc.stderr[-2000:]}", file=sys.stderr)
        return result
    result["output"] = json.loads(lines[-1])
    print(f"{name} done in {result['wall_s']:.1f} s", file=sys.stderr, flush=True)
    return result


# --- the table ------------------------------------------------------------------------------------

def fmt_s(x):
    if x is None:
        return "—"
    if x >= 1:
        return f"{x:.3f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.2f} ms"
    return f"{x * 1e6:.1f} µs"


def fmt_mb(x):
    return "—" if x is None else f"{x:,.0f} MB"


def table(s, d, args, vae_dtype_s, vae_dtype_d):
    s, d = s or {}, d or {}

    def steps(r, how):
        xs = r.get("step_s") or []
        return (min(xs) if how == "min" else statistics.median(xs)) if xs else None

    def add(a, b):
        return None if a is None or b is None else a + b

    n_s, n_d = len(s.get("step_s") or []), len(d.get("step_s") or [])
    rows = [
        ("load (weights to the device, warm page cache)", s.get("load_s"), d.get("load_s"), fmt_s),
        ("tokenize (prompt and negative)", s.get("tokenize_s"), d.get("tokenize_s"), fmt_s),
        ("text encode: one CLIP forward, batch of 2", s.get("encode_s"), d.get("text_encoder_s"), fmt_s),
        ("prompt to embeddings as each does it ¹", add(s.get("tokenize_s"), s.get("encode_s")), d.get("encode_s"), fmt_s),
        (f"guided UNet step, min of {n_s} / {n_d} ²", steps(s, "min"), steps(d, "min"), fmt_s),
        (f"guided UNet step, median of {n_s} / {n_d} ²", steps(s, "median"), steps(d, "median"), fmt_s),
        (f"VAE decode (sdlab {vae_dtype_s}, diffusers {vae_dtype_d}) ³", s.get("decode_s"), d.get("decode_s"), fmt_s),
        ("whole process, start to exit (not comparable work: see ⁵)", s.get("wall_s"), d.get("wall_s"), fmt_s),
        ("peak resident memory (RSS)", s.get("peak_rss_mb"), d.get("peak_rss_mb"), fmt_mb),
    ]
    if args.device == "cuda":
        rows.append(("peak GPU memory used, process total ⁴", s.get("gpu_used_peak_mb"), d.get("gpu_used_peak_mb"), fmt_mb))
        rows.append(("peak GPU memory in tensors ⁴", s.get("peak_device_mb"), d.get("peak_device_mb"), fmt_mb))
        rows.append(("peak GPU memory reserved by torch ⁴", None, d.get("peak_device_reserved_mb"), fmt_mb))
    print(f"## sdlab vs diffusers: {args.width}x{args.height}, {args.steps} steps, {args.device} {args.dtype}, "
          f"{args.threads} threads\n")
    print("| stage | sdlab | diffusers | sdlab / diffusers (< 1: sdlab faster or smaller) |")
    print("|---|---:|---:|---:|")
    for name, a, b, f in rows:
        ratio = f"{a / b:.2f}" if a is not None and b else "—"
        print(f"| {name} | {f(a)} | {f(b)} | {ratio} |")
    print()
    print("Both tools: every one-off stage runs once untimed, then the minimum of "
          f"{args.repeats} timed runs; load is timed once.")
    print("¹ sdlab: tokenize + one text-encoder forward on the batch of 2; diffusers: encode_prompt, which "
          "tokenizes and runs the text encoder twice, on batches of 1.")
    print("² 2 x UNet (batch of 2) + classifier-free guidance (7.5) + DDIM step. Each tool first runs one untimed "
          "warm-up step on the first timestep; every one of the STEPS steps after it is timed and counted "
          "(none dropped).")
    print(f"³ sdlab decodes in float32 when the VAE config says force_upcast (a missing key counts as true, "
          f"as in diffusers' AutoencoderKL); diffusers' StableDiffusionPipeline decodes in the pipeline dtype. "
          + ("Here diffusers was told to do what sdlab does." if not args.vae_as_pipeline
             else "Here diffusers decodes as its pipeline does (--vae-as-pipeline)."))
    if args.device == "cuda":
        print("⁴ process total: the GPU's used memory above its idle level, sampled while the tool ran "
              f"({args.gpu_method or 'not measured: neither NVML nor nvidia-smi found'}); it includes the CUDA context and allocator caches. in tensors: "
              "diffusers' torch.cuda.max_memory_allocated (reserved, torch.cuda.max_memory_reserved, is larger: "
              "the caching allocator keeps freed blocks), sdlab's peak_device_mb where its bench reports one "
              "(the high-water mark of cudarc's memory pool); neither counts the CUDA context.")
    print("⁵ the benchmarks' own wall time, interpreter or binary start included; sdlab bench also times a few "
          "cheap stages diffusers' bench has no counterpart for (latent, scheduler step, latent preview).")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--model", required=True, help="a local diffusers folder")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--steps", type=int, default=20, help="timed guided steps (after one untimed warm-up)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each one-off stage (the minimum is shown)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["f32", "f16"], help="default: f16 on cuda, f32 on cpu (sdlab's defaults)")
    p.add_argument("--threads", type=int, help="CPU threads for both (default: candle's choice, capped to usable CPUs)")
    p.add_argument("--sdlab", default=str(REPO / "target" / "release" / "sdlab"), help="the sdlab binary")
    p.add_argument("--python", default=sys.executable, help="the Python that has torch and diffusers")
    p.add_argument("--only", choices=["sdlab", "diffusers"], help="run one tool only")
    p.add_argument("--vae-as-pipeline", action="store_true",
                   help="let diffusers decode in the pipeline dtype even where sdlab upcasts its VAE to float32")
    p.add_argument("--no-warm-cache", action="store_true", help="do not read the model files before the runs")
    p.add_argument("--timeout", type=float, help="seconds each tool may run")
    p.add_argument("--json-out", help="write each tool's raw JSON (and the machine) here, one JSON object a line")
    args = p.parse_args()
    args.dtype = args.dtype or ("f16" if args.device == "cuda" else "f32")

    candle_n, candle_how = candle_default_threads()
    usable = usable_cpus()
    if args.threads:
        threads_note = f"--threads; candle would pick {candle_n} ({candle_how})"
    else:
        args.threads = min(candle_n, usable)
        threads_note = f"candle's choice: {candle_n} ({candle_how})" + (
            f", capped to the {usable} usable CPUs" if candle_n > usable else "")
    env = dict(os.environ)
    for var in ("RAYON_NUM_THREADS", "CANDLE_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)

    config = json.loads(read(Path(args.model) / "vae" / "config.json") or "{}")
    sdlab_upcasts = args.dtype == "f16" and bool(config.get("force_upcast", True))
    vae_dtype_s = "f32" if args.dtype == "f32" or sdlab_upcasts else "f16"
    vae_flag = "f32" if sdlab_upcasts and not args.vae_as_pipeline else "model"

    info = machine(args, args.python, threads_note)
    print_machine(info, args.threads, threads_note)

    if not args.no_warm_cache:
        size, secs = warm_page_cache(args.model)
        print(f"read the model's {size / 2**30:.2f} GiB once to warm the page cache ({secs:.1f} s)", file=sys.stderr)

    gpu = None
    if args.device == "cuda":  # NVML counts GPUs as nvidia-smi does; CUDA_VISIBLE_DEVICES may pick another one
        first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
        gpu = GpuMemory(int(first) if first.isdigit() else 0)
    args.gpu_method = gpu.method if gpu else None
    if gpu and gpu.method is None:
        gpu = None
    size = [str(args.width), str(args.height), str(args.steps)]
    results = {}
    if args.only != "diffusers":
        results["sdlab"] = run_tool("sdlab", [args.sdlab, "bench", "--model", args.model, "--width", size[0],
                                              "--height", size[1], "--steps", size[2], "--repeats", str(args.repeats),
                                              "--device", args.device, "--dtype", args.dtype, "--json"],
                                    env, gpu, args.timeout)
    if args.only != "sdlab":
        results["diffusers"] = run_tool("diffusers", [args.python, str(BENCH_DIR / "bench_diffusers.py"), args.model,
                                                      *size, str(args.threads), "--device", args.device,
                                                      "--dtype", args.dtype, "--warmup", "--repeats",
                                                      str(args.repeats), "--vae-dtype", vae_flag],
                                        env, gpu, args.timeout)

    def merged(name):
        r = results.get(name) or {}
        out = dict(r.get("output") or {})
        for key in ("gpu_used_peak_mb", "wall_s"):
            if key in r and out:
                out[key] = r[key]
        return out or None

    d = merged("diffusers")
    vae_dtype_d = d.get("vae_dtype") if d else {"f32": "f32", "model": args.dtype}[vae_flag]
    table(merged("sdlab"), d, args, vae_dtype_s, vae_dtype_d)
    for name, r in results.items():
        if "error" in r:
            print(f"\n**{name} failed**: {r['error'].splitlines()[0] if r['error'] else ''}")

    if args.json_out:
        with open(args.json_out, "w") as f:
            for r in results.values():
                f.write(json.dumps(r) + "\n")
            f.write(json.dumps({"tool": "compare", "machine": info, "threads": args.threads,
                                "settings": {k: v for k, v in vars(args).items()}}) + "\n")
    return 0 if all("output" in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
