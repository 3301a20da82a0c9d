"""One rank of a multi-GPU training job on torch's fake process group, with the fake-CUDA tensors of the
single-GPU trace: the process group, the device mesh and a stand-in for torch.cuda's streams and events.

The fake group (`torch.testing._internal.distributed.fake_pg`, backend "fake") answers every collective
without moving data, so rank 0 runs its real step alone: FSDP2's all-gathers and reduce-scatters allocate
their buffers exactly as on a GPU. FSDP2 asks the device handle (torch.cuda) for the current device, streams
and events, which CPU-only torch refuses; `install_device_handle` gives FSDP and DTensor a handle whose
streams and events do nothing. Python holds FSDP's buffers across streams the same way (FSDP frees them at
the next unit's events, not through the allocator's stream tracking), so what is alive when is unchanged;
per-stream pools of the caching allocator are not modelled (the replay uses one stream).

Imported only after `boot.load()`; it imports torch.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from memfit.core.choices import FsdpStrategy
from memfit.core.errors import EngineUnavailable
from memfit.core.workload import Parallelism

RANK = 0
"""The rank traced: FSDP2 pads every rank's shard to the same size (dim 0 rounded up to a multiple of the
shard group), so rank 0 holds as much as any rank."""

HANDLE_USERS = ("torch.distributed.device_mesh", "torch.distributed.fsdp._fully_shard._fsdp_collectives",
                "torch.distributed.fsdp._fully_shard._fsdp_init",
                "torch.distributed.fsdp._fully_shard._fsdp_state",
                "torch.distributed.fsdp._fully_shard._fsdp_param_group", "torch.distributed.tensor._random")
"""Modules that look up `_get_device_handle` (torch 2.13); each gets the fake handle for "cuda"."""


class _Stream:
    """A CUDA stream that orders nothing: one rank on fake tensors has no concurrency to order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def wait_stream(self, other: Any) -> None:
        pass

    def wait_event(self, event: Any) -> None:
        pass

    def record_event(self, event: Any = None) -> _Event:
        return _Event()

    def synchronize(self) -> None:
        pass


class _Event:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def record(self, stream: Any = None) -> _Event:
        return self

    def wait(self, stream: Any = None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


_CURRENT_STREAM = _Stream()


class FakeCudaHandle:
    """What FSDP2 and DTensor call on `torch.cuda` (their device handle), for one fake device cuda:0."""

    Stream = _Stream
    Event = _Event

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cuda, name)

    def current_device(self) -> int:
        return 0

    def device_count(self) -> int:
        return 1

    def set_device(self, device: Any) -> None:
        pass

    def is_available(self) -> bool:
        return True

    def current_stream(self, device: Any = None) -> _Stream:
        return _CURRENT_STREAM

    def stream(self, stream: Any) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def synchronize(self, device: Any = None) -> None:
        pass


def install_device_handle() -> None:
    """Point FSDP's and DTensor's `_get_device_handle("cuda")` at FakeCudaHandle (process-global)."""
    import torch.distributed.device_mesh as device_mesh

    original = getattr(device_mesh._get_device_handle, "__wrapped__", device_mesh._get_device_handle)
    handle = FakeCudaHandle()

    def device_handle(device_type: str = "cuda") -> Any:
        return handle if device_type == "cuda" else original(device_type)

    device_handle.__wrapped__ = original  # type: ignore[attr-defined]
    for name in HANDLE_USERS:
        module: Any = importlib.import_module(name)
        module._get_device_handle = device_handle


def isolate_propagation() -> None:
    """Give DTensor's sharding propagation a fake mode of its own, as on a GPU: it runs each new op schema
    once on fake inputs to learn the output's shape, in `detect_fake_mode() or FakeTensorMode()` (torch
    2.13 _sharding_prop.py `_propagate_tensor_meta_non_cached`), which under the trace would be the trace's
    own mode, so those metadata-only tensors would be counted (7× the shard at the first optimizer step).
    Both the tracker and FSDPMemTracker skip ops under another fake mode than their own."""
    import torch.distributed.tensor._sharding_prop as sharding_prop

    module: Any = sharding_prop
    module.detect_fake_mode = _no_fake_mode


def _no_fake_mode(*args: Any, **kwargs: Any) -> None:
    return None


def init_group(world_size: int) -> None:
    """The default process group: backend "fake", this process as rank 0 of `world_size`."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        dist.destroy_process_group()
    dist.init_process_group("fake", rank=RANK, world_size=world_size, store=FakeStore())


def shard_degrees(par: Parallelism) -> tuple[int, int]:
    """(replicate, shard) degrees of the data-parallel mesh: HSDP shards within a node of gpus_per_node
    and replicates across nodes (Parallelism checks that dp fills whole nodes); the other strategies shard
    (or replicate) over all dp."""
    if par.fsdp is not FsdpStrategy.HYBRID or par.dp <= par.gpus_per_node:
        return 1, par.dp
    return par.dp // par.gpus_per_node, par.gpus_per_node


def meshes(par: Parallelism) -> Group:
    """The data-parallel mesh (FSDP; 2-D (replicate, shard) for HSDP) and the tensor-parallel mesh, on cuda.
    With both dp and tp, one 2-D (dp, tp) mesh: tensor-parallel ranks are neighbours (within a node)."""
    from torch.distributed.device_mesh import init_device_mesh

    if par.ep > 1:
        return _expert_meshes(par)
    if par.tp > 1:
        if par.dp == 1:
            return Group(tp_mesh=init_device_mesh("cuda", (par.tp,), mesh_dim_names=("tp",)))
        mesh = init_device_mesh("cuda", (par.dp, par.tp), mesh_dim_names=("dp", "tp"))
        return Group(mesh=mesh["dp"], tp_mesh=mesh["tp"])
    if par.fsdp is None:
        return Group()
    replicate, shard = shard_degrees(par)
    if par.fsdp is FsdpStrategy.HYBRID:
        return Group(mesh=init_device_mesh("cuda", (replicate, shard), mesh_dim_names=("replicate", "shard")))
    return Group(mesh=init_device_mesh("cuda", (par.dp,), mesh_dim_names=("dp",)))


def _expert_meshes(par: Parallelism) -> Group:
    """Expert parallelism carved out of dp (torchtitan ParallelDims): a 2-D (dp / ep, ep) mesh whose "ep"
    rows exchange tokens by all-to-all and whose "efsdp" columns shard each rank's experts (FSDP), beside
    the 1-D dp mesh the dense weights are sharded over (None under DDP)."""
    from torch.distributed.device_mesh import init_device_mesh

    experts = init_device_mesh("cuda", (par.dp // par.ep, par.ep), mesh_dim_names=("efsdp", "ep"))
    dense = None if par.fsdp is None else init_device_mesh("cuda", (par.dp,), mesh_dim_names=("dp",))
    return Group(mesh=dense, ep_mesh=experts["ep"], expert_mesh=experts["efsdp"])


def check_traced(par: Parallelism) -> None:
    """EngineUnavailable for the parallel settings the trace does not run yet, naming what to use."""
    from memfit.core.choices import ZeroStage

    if par.ep > 1 and par.fsdp not in (None, FsdpStrategy.FULL, FsdpStrategy.SHARD_GRAD_OP):
        raise EngineUnavailable(f"trace runs ep={par.ep} with DDP or fsdp=full / shard-grad-op, not "
                                f"fsdp={par.fsdp}; use engine=analytic")
    if par.pp > 1 and par.dp * par.tp > 1:
        raise EngineUnavailable(f"trace runs pipeline stages alone, not pp={par.pp} with dp={par.dp} "
                                f"tp={par.tp}; use engine=analytic")
    if par.zero is not ZeroStage.NONE:
        raise EngineUnavailable(f"trace runs FSDP2 and DDP, not DeepSpeed zero={par.zero}; use fsdp=full "
                                "(ZeRO-3), fsdp=shard-grad-op (ZeRO-2) or engine=analytic")
    if par.tp > 1 and par.dp > 1 and par.fsdp in (None, FsdpStrategy.HYBRID):
        raise EngineUnavailable(f"trace combines tp with fsdp=full or shard-grad-op only, not with "
                                f"{'DDP' if par.fsdp is None else 'fsdp=hybrid'}; use engine=analytic")


@dataclass(frozen=True)
class Group:
    """The traced rank's view of the job: its data-parallel mesh (FSDP; None under DDP), its
    tensor-parallel mesh (None without tp) and, with expert parallelism, the expert-parallel mesh the
    all-to-all runs over and the expert-data-parallel mesh the experts are sharded over (None without ep)."""

    mesh: Any = None
    tp_mesh: Any = None
    ep_mesh: Any = None
    expert_mesh: Any = None


@contextlib.contextmanager
def fake_group(par: Parallelism) -> Iterator[Group]:
    """The fake process group and meshes for one rank of `par` (torn down afterwards)."""
    install_device_handle()
    isolate_propagation()
    init_group(par.dp * par.tp)
    try:
        yield meshes(par)
    finally:
        dist.destroy_process_group()
