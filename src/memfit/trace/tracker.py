"""A TorchDispatchMode that counts the bytes the CUDA caching allocator would hold, op by op.

Each storage an op returns is registered once, rounded up to ALLOCATOR_ROUND_BYTES, and subtracted when
its weakref finaliser fires (the last tensor viewing it died). The tracker keeps the running total, the
peak overall and per phase, and at each phase's peak a copy of the live set, so the peak can be split into
roles afterwards (`mark` tags parameters, gradients, optimizer states, KV cache and logits by storage).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._subclasses.fake_tensor import DataDependentOutputException
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_iter

from memfit.core import overhead
from memfit.trace import patches
from memfit.trace.allocator import CachingAllocator

HOST_ROLE = "host"
"""Role of tensors that a real GPU run keeps in host memory (AdamW's step counters)."""

ALLOCATOR_ROUND_BYTES = overhead.ALLOC_BLOCK_BYTES
"""Block granularity of the CUDA caching allocator (bytes), as core/overhead.py states it (kMinBlockSize);
max_memory_allocated counts rounded block sizes."""


def rounded_bytes(nbytes: int) -> int:
    """Bytes the caching allocator takes for a request of `nbytes`: rounded up to 512, 0 for empty."""
    return -(-nbytes // ALLOCATOR_ROUND_BYTES) * ALLOCATOR_ROUND_BYTES


@dataclass
class PhasePeak:
    """A phase's peak: total bytes, the live storages then (serial → bytes) and the op that reached it."""

    name: str
    start_bytes: int = 0
    peak_bytes: int = 0
    end_bytes: int = 0
    peak_reserved: int = 0                      # from the allocator replay (0 without one)
    live: dict[int, int] = field(default_factory=dict)
    op: str = ""
    host_peak_bytes: int = 0                    # host tensors (Tracker.host_device), their own peak
    host_live: dict[int, int] = field(default_factory=dict)


class Tracker(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Counts allocator bytes of every storage produced under it (use inside a FakeTensorMode)."""

    def __init__(self, device_type: str | None = None, allocator: CachingAllocator | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.allocator = allocator
        self.events: list[tuple[int, int]] | None = None   # recording: (serial, bytes; 0 = free)
        self.device_type = device_type          # count only tensors on this device type (None: all)
        self.live: dict[int, int] = {}          # serial → rounded bytes
        self._serial_of: dict[int, int] = {}    # storage pointer (StorageImpl*) → serial while alive
        self._serials = itertools.count(1)
        self.total = 0
        self.peak = 0
        self.roles: dict[int, str] = {}         # serial → role ("weights", "gradients", ...)
        self.phases: list[PhasePeak] = []
        self._phase: PhasePeak | None = None
        self.num_ops = 0
        self.paged_bytes = 0                    # bytes outside the allocator (bnb paged optimizer states)
        self._threads: set[int] = set()
        self.answer_scalars = True              # read fake scalars as 0 instead of failing
        self.scalars_answered = 0
        # multi-rank (trace/ranks.py): tensor subclasses that desugar into local ops first (DTensor), and
        # roles of the tensors a collective takes (op → ((argument index, role), ...))
        self.defer_to: tuple[type, ...] = ()
        self.collective_roles: dict[Any, tuple[tuple[int, str], ...]] = {}
        self._fake_mode: Any = None
        # FSDP CPU offload: also count fake tensors on this device, as host RAM (unrounded: not the GPU's
        # caching allocator), apart from the device count
        self.host_device: str | None = None
        self.host_live: dict[int, int] = {}
        self.host_total = 0

    # --- counting -------------------------------------------------------------------------------------

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if self.defer_to and any(issubclass(t, self.defer_to) for t in types):
            return NotImplemented       # let DTensor run its local ops, which come back here
        if self.defer_to and _active_fake_mode() is not self._fake_mode:
            return func(*args, **(kwargs or {}))    # DTensor's sharding propagation: metadata only
        if self.defer_to and func is _WAIT_TENSOR:
            return args[0]      # eager waits in place; the fake kernel would return a new tensor
        if func is torch.ops.aten._local_scalar_dense.default and self.answer_scalars:
            try:
                return func(*args, **(kwargs or {}))        # fake tensors holding a constant know it
            except DataDependentOutputException:
                return self._answer_scalar(args[0])
        out = func(*args, **(kwargs or {}))
        self.num_ops += 1
        for index, role in self.collective_roles.get(func, ()):
            self.mark(role, _tensors(args[index]))
        if self.allocator is not None and func in _MATMULS:
            self._first_matmul_of_thread()
        grew = False
        for value in tree_iter(out):
            if isinstance(value, torch.Tensor):
                grew |= self._register(value)
        if grew:
            self._note_peak(func)
        return out

    def _answer_scalar(self, tensor: torch.Tensor) -> bool | int | float:
        """A fake tensor has no value: `.item()` / `bool()` read as 0 (False). Used for the branches HF takes
        on values that do not change shapes (longrope's factor choice, OPT's layerdrop draw); counted."""
        self.scalars_answered += 1
        if tensor.dtype == torch.bool:
            return False
        return 0.0 if tensor.is_floating_point() else 0

    def _first_matmul_of_thread(self) -> None:
        """cuBLAS takes a workspace from the allocator at a thread's first matmul (one handle per thread:
        the forward's and autograd's device thread). Counted in the replay only; `assemble` adds it."""
        thread = threading.get_ident()
        if thread not in self._threads and self.allocator is not None:
            self._threads.add(thread)
            self.allocator.malloc(-len(self._threads) - 1,
                                  overhead.cublas_workspace_bytes(gpu=patches.current_gpu()))

    def cached_block(self, nbytes: int) -> None:
        """A block the real run allocated and freed outside the traced ops (a random-weight build's LM head
        before tying): the replay reserves it and keeps it cached; it is never counted as allocated."""
        if self.allocator is not None and nbytes:
            serial = next(self._serials)
            self.allocator.malloc(serial, rounded_bytes(nbytes))
            self.allocator.free(serial)

    def register(self, tensors: Iterable[torch.Tensor]) -> None:
        """Count tensors created outside dispatch (none in practice; kept for stand-ins built by hand)."""
        for tensor in tensors:
            self._register(tensor)
        self._note_peak(None)

    def _register(self, tensor: torch.Tensor) -> bool:
        if self.device_type is not None and tensor.device.type != self.device_type:
            if tensor.device.type == self.host_device and _is_fake(tensor):
                return self._register_host(tensor)
            return False                          # e.g. AdamW's CPU step counters
        if tensor.device.type == "meta" and not _is_fake(tensor):
            return False
        storage = tensor.untyped_storage()
        key = storage._cdata
        nbytes = rounded_bytes(storage.nbytes())
        serial = self._serial_of.get(key)
        if serial is not None:
            grown = nbytes - self.live.get(serial, nbytes)
            if grown > 0:                                  # resize_ of a registered storage
                self.live[serial] = nbytes
                self.total += grown
                return True
            return False
        if nbytes == 0:
            return False
        serial = next(self._serials)
        self._serial_of[key] = serial
        self.live[serial] = nbytes
        self.total += nbytes
        if self.allocator is not None:
            self.allocator.malloc(serial, nbytes)
            if self.events is not None:
                self.events.append((serial, nbytes))
        weakref.finalize(storage, self._release, key, serial)
        return True

    def _register_host(self, tensor: torch.Tensor) -> bool:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._serial_of or storage.nbytes() == 0:
            return False
        serial = next(self._serials)
        self._serial_of[key] = serial
        self.host_live[serial] = storage.nbytes()
        self.host_total += storage.nbytes()
        weakref.finalize(storage, self._release, key, serial)
        return True

    @contextmanager
    def resizes(self) -> Iterator[None]:
        """Count `UntypedStorage.resize_` on counted storages, which dispatch does not see: FSDP frees and
        re-allocates its unsharded parameters this way (free_storage / alloc_storage in _fsdp_param.py)."""
        original = torch.UntypedStorage.resize_

        def resize_(storage: torch.UntypedStorage, size: int) -> Any:
            out = original(storage, size)
            self._resized(storage._cdata, rounded_bytes(int(size)))
            return out

        torch.UntypedStorage.resize_ = resize_  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            torch.UntypedStorage.resize_ = original  # type: ignore[method-assign]

    def _resized(self, key: int, nbytes: int) -> None:
        serial = self._serial_of.get(key)
        if serial is None:
            return
        old = self.live.pop(serial, 0)
        self.total -= old
        if self.allocator is not None and old:
            self.allocator.free(serial)
            if self.events is not None:
                self.events.append((serial, 0))
        if nbytes:
            self.live[serial] = nbytes
            self.total += nbytes
            if self.allocator is not None:
                self.allocator.malloc(serial, nbytes)
                if self.events is not None:
                    self.events.append((serial, nbytes))
            self._note_peak("UntypedStorage.resize_")

    def _release(self, key: int, serial: int) -> None:
        self.host_total -= self.host_live.pop(serial, 0)
        nbytes = self.live.pop(serial, 0)
        self.total -= nbytes
        if self.allocator is not None:
            self.allocator.free(serial)
            if self.events is not None:
                self.events.append((serial, 0))
        if self._serial_of.get(key) == serial:
            del self._serial_of[key]

    def __enter__(self) -> Tracker:
        if self.defer_to:
            self._fake_mode = _active_fake_mode()
        return super().__enter__()  # type: ignore[no-untyped-call,no-any-return]

    def _note_peak(self, func: Any) -> None:
        self.peak = max(self.peak, self.total)
        phase = self._phase
        if phase is not None and self.host_total > phase.host_peak_bytes:
            phase.host_peak_bytes = self.host_total
            phase.host_live = self.host_live.copy()
        if phase is not None and self.total > phase.peak_bytes:
            phase.peak_bytes = self.total
            phase.live = self.live.copy()
            phase.op = str(func) if func is not None else ""

    # --- phases and roles -----------------------------------------------------------------------------

    @contextmanager
    def phase(self, name: str) -> Iterator[PhasePeak]:
        """Track one phase; its peak starts from the bytes live at its start (as reset_peak_memory_stats)."""
        record = PhasePeak(name=name, start_bytes=self.total, peak_bytes=self.total, live=self.live.copy(),
                           host_peak_bytes=self.host_total, host_live=self.host_live.copy())
        self._phase = record
        if self.allocator is not None:
            self.allocator.reset_peak()
            if self.events is not None:
                self.events.append((-1, 0))                 # a phase boundary in the recording
        try:
            yield record
        finally:
            record.end_bytes = self.total
            if self.allocator is not None:
                record.peak_reserved = self.allocator.peak_reserved
            self._phase = None
            self.phases.append(record)

    def repeat_phases(self, names: tuple[str, ...], role: str, *, heaviest: bool = False) -> None:
        """Append copies of the last phases called `names` (`heaviest`: of the one with the highest peak of
        each name), with every live storage tagged `role` added.

        A second training step runs the same ops as the first with the optimizer states alive throughout
        (gradients are None again after zero_grad(set_to_none=True)), so its forward and backward are the
        first step's plus those states: this replays them without running the model again. A pipeline
        stage runs many forward and backward phases per step; each one's second-step peak is its first-step
        peak plus the states, so the heaviest is repeated.
        """
        extra = {serial: nbytes for serial, nbytes in self.live.items() if self.roles.get(serial) == role}
        added = sum(extra.values())
        host_extra = {serial: nbytes for serial, nbytes in self.host_live.items()
                      if self.roles.get(serial) == role}
        reserved = self._replay_events(len(names))
        for index, name in enumerate(names):
            last = max((p for p in self.phases if p.name == name), key=lambda p: p.peak_bytes) if heaviest \
                else next(p for p in reversed(self.phases) if p.name == name)
            self.phases.append(PhasePeak(name=name, start_bytes=last.start_bytes + added,
                                         peak_bytes=last.peak_bytes + added, end_bytes=last.end_bytes + added,
                                         live={**last.live, **extra}, op=last.op,
                                         peak_reserved=reserved[index] if index < len(reserved) else 0,
                                         host_peak_bytes=last.host_peak_bytes + sum(host_extra.values()),
                                         host_live={**last.host_live, **host_extra}))

    def record_events(self) -> None:
        """Start recording allocator events (for `repeat_phases` to replay them)."""
        self.events = []

    def _replay_events(self, num_phases: int) -> list[int]:
        """Replay the first `num_phases` recorded phases' allocations and frees on the allocator, with
        fresh handles (their storages that outlive those phases stay allocated); each one's peak reserved."""
        if self.allocator is None or not self.events:
            return []
        events, self.events = self.events, None
        offset = next(self._serials) + 1_000_000_000       # handles no live serial can reach
        phases: list[list[tuple[int, int]]] = []
        for serial, nbytes in events:
            if serial < 0:
                phases.append([])
            elif phases:
                phases[-1].append((serial, nbytes))
        peaks = []
        for phase in phases[:num_phases]:
            self.allocator.reset_peak()
            for serial, nbytes in phase:
                if nbytes:
                    self.allocator.malloc(serial + offset, nbytes)
                else:
                    self.allocator.free(serial + offset)
            peaks.append(self.allocator.peak_reserved)
        return peaks

    def serial(self, tensor: torch.Tensor) -> int | None:
        """The serial of the live storage behind `tensor` (a DTensor's local shard), or None if it is not
        counted."""
        tensor = getattr(tensor, "_local_tensor", tensor)
        return self._serial_of.get(tensor.untyped_storage()._cdata)

    def mark(self, role: str, tensors: Iterable[torch.Tensor | None]) -> None:
        """Tag the storages behind `tensors` with `role`; the first tag of a storage wins.

        Role "host" means the tensor lives in host memory on a real GPU: it is dropped from the count.
        """
        for tensor in tensors:
            if tensor is None:
                continue
            if role == HOST_ROLE:
                self._forget(tensor)
                continue
            serial = self.serial(tensor)
            if serial is not None:
                self.roles.setdefault(serial, role)

    def _forget(self, tensor: torch.Tensor) -> None:
        tensor = getattr(tensor, "_local_tensor", tensor)
        key = tensor.untyped_storage()._cdata
        serial = self._serial_of.pop(key, None)
        if serial is not None:
            self.host_total -= self.host_live.pop(serial, 0)
            self.total -= self.live.pop(serial, 0)
            if self.allocator is not None:
                self.allocator.free(serial)

    def breakdown(self, peak: PhasePeak, default_role: str, *, host: bool = False) -> dict[str, int]:
        """Bytes by role of the storages live at `peak` (the host ones at its host peak, with `host`);
        untagged ones go to `default_role`."""
        out: dict[str, int] = {}
        for serial, nbytes in (peak.host_live if host else peak.live).items():
            role = self.roles.get(serial, default_role)
            out[role] = out.get(role, 0) + nbytes
        return out


_WAIT_TENSOR = torch.ops._c10d_functional.wait_tensor.default
"""Functional collectives' wait (DTensor redistribution under tensor parallelism)."""

_MATMULS = frozenset({torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
                      torch.ops.aten.baddbmm.default})
"""Ops that call cuBLAS (and so create the thread's workspace)."""


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a collective's argument: one tensor or a (nested) list of them."""
    return [t for t in tree_iter(value) if isinstance(t, torch.Tensor)]


def _active_fake_mode() -> Any:
    from torch._guards import active_fake_mode

    return active_fake_mode()


def _is_fake(tensor: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(tensor, FakeTensor)


def real_prefill_bytes(model: Any, forward: Any) -> int:
    """Bytes a real CPU prefill allocates beyond `model`'s weights: `forward()` (which builds its own inputs
    and returns the model output, dropped at once) under a Tracker, whose load phase registers each weight's
    storage (made before the tracker) through a view. The reference the vision-tower checks compare with."""
    tracker = Tracker(device_type="cpu")
    with tracker, torch.no_grad():
        with tracker.phase("load"):
            views = [p.detach() for p in model.parameters()]
        with tracker.phase("prefill"):
            out = forward()
            del out
    del views
    load, prefill = tracker.phases
    return int(prefill.peak_bytes - load.peak_bytes)
