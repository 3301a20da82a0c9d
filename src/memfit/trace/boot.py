"""Load the fake-CUDA shim before torch is imported; fall back to fake CPU tensors without a compiler.

`fakecuda.cpp` (package data) registers a CUDA device guard and CUDA hooks whose isBuilt() is true in a
CPU-only libtorch, so FakeTensors on cuda:0 support slicing, .to("cuda"), uniform_ and backward(). It is
compiled once per torch version against that torch's headers (about 2 s) and cached under
~/.cache/memfit (or $MEMFIT_CACHE_DIR). Without a compiler, or when torch has real CUDA, the trace runs on
fake "cpu" tensors with CUDA's behaviour emulated (SDPA backend choice, 512-byte rounding, autocast("cpu")).

This module must not import torch: `load()` has to run first.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

COMPILE_TIMEOUT_S = 120
"""Longest we wait for g++ on the shim (seconds); it takes about 2 s."""


@dataclass(frozen=True)
class Boot:
    """How this process fakes the GPU: device "cuda" with the shim, or "cpu" (a fallback, with the reason)."""

    device: str
    note: str = ""


def _torch_dir() -> Path | None:
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _cache_dir() -> Path:
    root = os.environ.get("MEMFIT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "memfit")
    return Path(root)


def shim_source() -> str:
    """The C++ source of the shim, read from package data."""
    return importlib.resources.files("memfit.trace").joinpath("fakecuda.cpp").read_text()


def compile_shim(torch_dir: Path) -> Path:
    """Build (or reuse) the shim for the installed torch; raises RuntimeError with the compiler's reason."""
    source = shim_source()
    version = importlib.metadata.version("torch")
    digest = hashlib.sha256(f"{version}\n{torch_dir}\n{source}".encode()).hexdigest()[:12]
    target = _cache_dir() / f"fakecuda-torch{version}-{digest}.so"
    if target.exists():
        return target
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++ or c++) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "fakecuda.cpp"
        src.write_text(source)
        out = Path(tmp) / "fakecuda.so"
        lib = torch_dir / "lib"
        cmd = [compiler, "-O1", "-shared", "-fPIC", "-std=c++20", "-w", "-D_GLIBCXX_USE_CXX11_ABI=1",
               f"-I{torch_dir / 'include'}", str(src), f"-L{lib}", "-Wl,--no-as-needed", "-lc10",
               "-ltorch_cpu", f"-Wl,-rpath,{lib}", "-o", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise RuntimeError(f"compiling the shim failed: {last}")
        os.replace(out, target)     # atomic: concurrent workers never load a half-written file
    return target


def _torch_has_cuda(torch_dir: Path) -> bool:
    return any((torch_dir / "lib").glob("libtorch_cuda*.so"))


def load() -> Boot:
    """Load the shim into this process (before `import torch`); a fallback Boot says why it could not."""
    if "torch" in sys.modules:
        return Boot(device="cpu", note="torch was imported before the fake-CUDA shim")
    if os.environ.get("MEMFIT_TRACE_DEVICE") == "cpu":
        return Boot(device="cpu", note="MEMFIT_TRACE_DEVICE=cpu")
    torch_dir = _torch_dir()
    if torch_dir is None:
        return Boot(device="cpu", note="torch is not installed")
    if _torch_has_cuda(torch_dir):
        return Boot(device="cpu", note="this torch has CUDA built in; the CPU-only shim does not apply")
    try:
        path = compile_shim(torch_dir)
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        return Boot(device="cpu", note=str(err))
    return Boot(device="cuda")


def fallback_assumption(boot: Boot) -> str:
    """The assumption line for a run on fake CPU tensors."""
    return (f"trace ran on fake cpu tensors with CUDA emulated ({boot.note}); SDPA backend choice, "
            "512-byte rounding and autocast are emulated, cuda-only code paths are not")
