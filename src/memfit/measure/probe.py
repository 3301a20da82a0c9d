"""The CUDA probe: per phase synchronize, reset_peak_memory_stats, run, read the allocator and NVML."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch


class CudaProbe:
    """Records each phase as the ground truth does: start/peak/end allocated, peak/end reserved, wall time."""

    def __init__(self, device: int = 0) -> None:
        self.device = device
        self.phases: list[dict[str, Any]] = []
        self._counts: dict[str, int] = {}
        self.oom: str | None = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """One phase; training phases are numbered by step (fwd1, bwd1, opt1, fwd2, ...)."""
        label = _record_name(name, self._counts)
        torch.cuda.synchronize(self.device)
        start = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        began = time.perf_counter()
        try:
            yield
        except torch.cuda.OutOfMemoryError:
            self.oom = label
            raise
        finally:
            torch.cuda.synchronize(self.device)
            self.phases.append({
                "name": label, "start_alloc": start,
                "peak_alloc": torch.cuda.max_memory_allocated(self.device),
                "end_alloc": torch.cuda.memory_allocated(self.device),
                "peak_reserved": torch.cuda.max_memory_reserved(self.device),
                "end_reserved": torch.cuda.memory_reserved(self.device),
                "wall_s": round(time.perf_counter() - began, 3),
            })

    def mark(self, role: str, tensors: Iterable[torch.Tensor | None]) -> None:
        """Roles are not split on a real GPU: the allocator only reports totals."""
        return None


_SHORT = {"forward": "fwd", "backward": "bwd", "optimizer": "opt"}


def _record_name(name: str, counts: dict[str, int]) -> str:
    if name not in _SHORT:
        return name
    counts[name] = counts.get(name, 0) + 1
    return f"{_SHORT[name]}{counts[name]}"


def nvml_memory(device: int = 0) -> dict[str, int]:
    """This process's and the whole device's used memory as NVML reports them (bytes); {} without NVML."""
    try:
        import os

        import pynvml
    except ImportError:
        return {}
    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(device)
        used = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        mine = 0
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                mine = int(proc.usedGpuMemory)
        return {"proc": mine, "device": used}
    finally:
        pynvml.nvmlShutdown()
