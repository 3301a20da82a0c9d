"""Data-parallel wrapping of the traced model (FSDP2, DDP) and the roles of the buffers they allocate.

FSDP2 as torchtitan and accelerate apply it: `fully_shard` on every decoder layer (the classes the model
lists in `_no_split_modules`), then on the root, which keeps the embeddings, the final norm and an untied
LM head. Each layer is turned into fake CUDA tensors just before it is sharded, so the load phase holds the
shards plus one unsharded unit at a time, as a rank that builds each unit and then shards it (FSDP2's
meta-device initialisation with `to_empty()` holds only the shards; the root unit is the largest).

Roles (children of the top-level terms; tracker.mark tags storages, the first tag wins):

| role                             | storage                                                             |
|----------------------------------|---------------------------------------------------------------------|
| weights/local_shards             | this rank's padded shard of every parameter (`_sharded_param_data`) |
| weights/buffers                  | module buffers (never sharded: rotary inv_freq)                     |
| weights/unsharded_params         | gathered units' parameters, compute dtype (all_gather_outputs)      |
| weights/all_gather_buffers       | the flat all-gather output, alive from copy-in to copy-out          |
| gradients/unsharded              | autograd's full-size gradients of a unit, until its reduce-scatter  |
| gradients/reduce_scatter_buffers | the flat reduce-scatter input (world × shard), to the next unit's   |
| gradients/sharded                | this rank's reduced shard, the `.grad` the optimizer reads          |
| gradients/ddp_buckets            | DDP's flat gradient buckets; `.grad` are views into them            |
| adapters                         | LoRA shards (FSDP) or replicas (DDP)                                |

Source: torch 2.13 torch/distributed/fsdp/_fully_shard (_fsdp_param.py, _fsdp_collectives.py,
_fsdp_param_group.py); torch/nn/parallel/distributed.py and reducer.cpp for DDP.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Iterator
from typing import Any

import torch

from memfit.core.choices import FsdpStrategy, Offload, Precision
from memfit.core.workload import Training
from memfit.trace import expert_parallel, harness, tensor_parallel
from memfit.trace.tracker import Tracker

SHARDS = "weights/local_shards"
BUFFERS = "weights/buffers"
UNSHARDED_PARAMS = "weights/unsharded_params"
ALL_GATHER = "weights/all_gather_buffers"
UNSHARDED_GRADS = "gradients/unsharded"
REDUCE_SCATTER = "gradients/reduce_scatter_buffers"
SHARDED_GRADS = "gradients/sharded"
DDP_BUCKETS = "gradients/ddp_buckets"

PERSISTENT = frozenset({SHARDS, BUFFERS, SHARDED_GRADS, DDP_BUCKETS})
"""Roles that live from step to step (for the allocator's segment rounding of persistent tensors)."""

_AMP_PARAM_DTYPE = {Precision.AMP_BF16: torch.bfloat16, Precision.AMP_FP16: torch.float16}


def collective_roles() -> dict[Any, tuple[tuple[int, str], ...]]:
    """Roles of the tensors FSDP2's collectives take: (argument index, role) per c10d op."""
    c10d = torch.ops.c10d
    return {c10d._allgather_base_.default: ((0, ALL_GATHER),),
            c10d._reduce_scatter_base_.default: ((1, REDUCE_SCATTER), (0, SHARDED_GRADS))}


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The model's repeated blocks: modules whose class transformers lists in `_no_split_modules`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    return [m for m in base.modules() if type(m).__name__ in names]


def mixed_precision(workload: Training) -> Any:
    """FSDP2's MixedPrecisionPolicy for the workload's precision: AMP keeps fp32 shards, gathers in the
    autocast dtype and reduces in fp32 (torchtitan's and accelerate's bf16 setting); pure bf16/fp16/fp32
    training gathers and reduces in the parameters' own dtype."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if workload.precision in _AMP_PARAM_DTYPE:
        return MixedPrecisionPolicy(param_dtype=_AMP_PARAM_DTYPE[workload.precision],
                                    reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def offload_policy(workload: Training) -> Any:
    """CPUOffloadPolicy when any offload is asked: FSDP2 offloads parameters, gradients and the optimizer
    step together. Unpinned: fake tensors cannot be pinned (aten._pin_memory has no fake kernel), and
    pinning changes host memory only, not what the GPU holds."""
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy

    if offloads(workload):
        return CPUOffloadPolicy(pin_memory=False)
    return OffloadPolicy()


def offloads(workload: Training) -> bool:
    """Whether FSDP offloads to the CPU (any offload asked, with fsdp)."""
    par = workload.parallel
    return par.fsdp is not None and (
        par.offload_optimizer is not Offload.NONE or par.offload_params is not Offload.NONE)


def wrap(model: Any, workload: Training, group: Any, device: str, tracker: Tracker) -> Any:
    """The model as one rank runs it: tensor-parallel splits over `group.tp_mesh`, then FSDP2 units over
    `group.mesh`, or DDP's buckets when data parallel without FSDP (trace/ranks.py Group)."""
    if group.ep_mesh is not None:
        expert_parallel.install(model, group.ep_mesh.get_group())
    if group.mesh is not None:
        shard(model, workload, group.mesh, device, tracker, tp_mesh=group.tp_mesh,
              expert_mesh=group.expert_mesh)
        return model
    if group.tp_mesh is not None:
        tensor_parallel.split(model, workload, group.tp_mesh, device, tracker)
        return model
    return replicate(model, workload, device, tracker)


def replicate(model: Any, workload: Training, device: str, tracker: Tracker) -> Any:
    """The model with DDP's gradient buckets beside it, as DistributedDataParallel holds them.

    DistributedDataParallel itself cannot wrap fake tensors: its constructor checks parameter shapes
    across ranks in C++ on the parameters' data (`_verify_param_shape_across_processes`), which fake
    tensors do not have. Its memory is the plain step plus the Reducer's flat buckets: with the default
    gradient_as_bucket_view=False autograd's `.grad` are separate tensors copied into the buckets for the
    all-reduce and back, in place. The buckets are allocated once and live through every step; they are
    sized here by torch's own `_compute_bucket_assignment_by_size` with the limits DDP rebuilds them with
    after the first step (first bucket DEFAULT_FIRST_BUCKET_BYTES, then DDP_BUCKET_CAP_BYTES), over the
    trainable parameters in reverse registration order (the order their gradients become ready).
    """
    harness.materialize(model, device)
    harness.mark_weights(model, tracker)
    model._memfit_ddp_buckets = ddp_buckets(model)      # alive as long as the model, as in the Reducer
    tracker.mark(DDP_BUCKETS, model._memfit_ddp_buckets)
    return model


DDP_BUCKET_CAP_BYTES = 25 * 1024 * 1024
"""DDP's default bucket_cap_mb=25, in bytes (torch/nn/parallel/distributed.py _DEFAULT_BUCKET_CAP_MB)."""


def ddp_buckets(model: Any) -> list[torch.Tensor]:
    """One flat tensor per DDP bucket, of the bucket's dtype and total elements."""
    dist: Any = importlib.import_module("torch.distributed")

    params = [p for p in reversed(list(model.parameters())) if p.requires_grad]
    limits = [dist._DEFAULT_FIRST_BUCKET_BYTES, DDP_BUCKET_CAP_BYTES]
    indices, _ = dist._compute_bucket_assignment_by_size(params, limits, [False] * len(params))
    return [torch.empty(sum(params[i].numel() for i in bucket), dtype=params[bucket[0]].dtype,
                        device=params[bucket[0]].device) for bucket in indices]


def assumptions(workload: Training) -> list[str]:
    """What the multi-rank trace assumes, in the words of the assumptions list."""
    par = workload.parallel
    out = [f"one rank of {par.dp * par.tp} traced on torch {torch.__version__}'s fake process group "
           "(rank 0; every rank holds the same padded shards)"]
    if par.tp > 1:
        out.append(f"tensor parallel over {par.tp} ranks by DTensor's parallelize_module, torchtitan's Llama "
                   "plan (q/k/v, gate/up column-wise; o, down row-wise; LM head column-wise with a "
                   "vocab-parallel loss; where the model has them, MLA's q/kv_b column-wise with its latent "
                   "down-projections replicated, fused routed experts split on their intermediate dimension "
                   "by transformers' packed_colwise / rowwise / moe_tp_experts)"
                   + ("; sequence parallel norms and residual stream" if par.sequence_parallel else ""))
    if par.ep > 1:
        out.append(f"expert parallelism ep={par.ep} as torchtitan's ExpertParallel: each rank holds "
                   f"1/{par.ep} of the routed experts (sharded over dp/ep ranks under FSDP), tokens "
                   "dispatched and combined by all_to_all_single_autograd around transformers' experts "
                   "forward; balanced routing assumed (each rank's experts receive tokens × top_k rows, "
                   f"1/{par.ep} from each rank)")
    if par.fsdp is None and par.dp > 1:
        out.append("DDP emulated: the plain step plus the Reducer's gradient buckets (bucket_cap_mb=25, "
                   "first bucket 1 MiB, gradient_as_bucket_view=False), sized by torch's "
                   "_compute_bucket_assignment_by_size; DistributedDataParallel itself reads parameter "
                   "data in C++, which fake tensors lack")
    if par.fsdp is not None:
        out.append(f"FSDP2 fully_shard per decoder layer and the root (fsdp={par.fsdp}); "
                   f"{mixed_precision_note(workload)}; the load phase builds each unit before sharding it "
                   "(one unsharded unit at a time)")
        if offloads(workload):
            out.append("FSDP2 CPUOffloadPolicy: parameters, gradients and optimizer states in host memory "
                       "(this rank's host bytes, unpinned: pinned memory is not emulated), the optimizer "
                       "step on the CPU")
    return out


def mixed_precision_note(workload: Training) -> str:
    if workload.precision in _AMP_PARAM_DTYPE:
        return (f"MixedPrecisionPolicy(param_dtype={workload.precision.value.removeprefix('amp-')}, "
                "reduce_dtype=fp32) under autocast")
    return f"parameters, gathers and reductions in {workload.precision.value}"


def shard(model: Any, workload: Training, mesh: Any, device: str, tracker: Tracker, *,
          tp_mesh: Any = None, expert_mesh: Any = None) -> None:
    """fully_shard per decoder layer, then the root, materialising each unit just before it is sharded
    (and split over `tp_mesh` first, for FSDP × TP). With expert parallelism the layer's routed experts
    are a unit of their own over `expert_mesh` (dp / ep ranks), sharded before the layer, as torchtitan's
    apply_fsdp does (fully_shard(transformer_block.moe.experts, mesh=edp_mesh))."""
    from torch.distributed.fsdp import fully_shard

    strategy = workload.parallel.fsdp
    options = {"mesh": mesh, "mp_policy": mixed_precision(workload),
               "offload_policy": offload_policy(workload),
               "reshard_after_forward": False if strategy is FsdpStrategy.SHARD_GRAD_OP else None}
    install_tags(tracker)
    sequence_parallel = workload.parallel.sequence_parallel
    if tp_mesh is not None:
        tensor_parallel.check_plan(model, workload)
    for layer in decoder_layers(model):
        harness.materialize(layer, device)
        if tp_mesh is not None:
            tensor_parallel.split_layer(layer, sequence_parallel, tp_mesh, device, tracker, mark=False)
        tracker.mark(UNSHARDED_PARAMS, layer.parameters())     # until fully_shard copies out the shard
        for experts in _experts_units(layer) if expert_mesh is not None else ():
            fully_shard(experts, **{**options, "mesh": expert_mesh})
            mark_shards(experts, tracker)
        with _real_mesh_inputs(tp_mesh):
            fully_shard(layer, **options)
        mark_shards(layer, tracker)
    harness.materialize(model, device)
    if tp_mesh is not None:
        tensor_parallel.split_root(model, workload, tp_mesh, device, tracker, mark=False)
    tracker.mark(UNSHARDED_PARAMS, model.parameters())
    with _real_mesh_inputs(tp_mesh):
        fully_shard(model, **options)
    mark_shards(model, tracker)


def _experts_units(layer: Any) -> list[Any]:
    """The outermost module holding each of `layer`'s shrunk routed experts (peft's ParamWrapper around
    them with LoRA, else the experts module itself)."""
    names = {name for name, module in layer.named_modules() if hasattr(module, expert_parallel.EP_ATTR)}
    outer = {name.split(".experts")[0] + ".experts" if ".experts" in name else name for name in names}
    return [layer.get_submodule(name) for name in sorted(outer)]


@contextlib.contextmanager
def _real_mesh_inputs(tp_mesh: Any) -> Iterator[None]:
    """With a tensor-parallel mesh, FSDP2 builds a (dp, tp) DeviceMesh from the two (torch 2.13
    _fsdp_param.py `_init_sharding_spec_tp`: DeviceMesh._concatenate), whose rank bookkeeping runs on
    real CPU tensors: run it outside the trace's fake mode (it holds no device memory)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    from torch.distributed.device_mesh import DeviceMesh

    if tp_mesh is None:
        yield
        return
    original = DeviceMesh._concatenate

    def concatenate(meshes: list[Any]) -> Any:
        with unset_fake_temporarily():
            return original(meshes)

    DeviceMesh._concatenate = staticmethod(concatenate)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        DeviceMesh._concatenate = staticmethod(original)  # type: ignore[method-assign]


def mark_shards(module: Any, tracker: Tracker) -> None:
    """Tag a unit's local shards (LoRA ones as adapters) and buffers."""
    for name, param in module.named_parameters():
        tracker.mark("adapters" if "lora_" in name else SHARDS, [param])
    tracker.mark(BUFFERS, list(module.buffers()))


def install_tags(tracker: Tracker) -> None:
    """Tag the storages FSDP2 allocates outside the collectives: the unsharded parameters when they are
    created (then resized to 0 and back at each reshard/unshard) and the unsharded gradients when their
    unit's post-backward starts (before the reduce-scatter copies them out)."""
    from torch.distributed.fsdp._fully_shard._fsdp_param import FSDPParam
    from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup

    tracker.collective_roles.update(collective_roles())
    init_outputs = _unwrapped(FSDPParam.init_all_gather_outputs)
    post_backward = _unwrapped(FSDPParamGroup.post_backward)

    @functools.wraps(init_outputs)
    def init_all_gather_outputs(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = init_outputs(self, *args, **kwargs)
        tracker.mark(UNSHARDED_PARAMS, self.all_gather_outputs)
        return out

    @functools.wraps(post_backward)
    def tagged_post_backward(self: Any, *args: Any, **kwargs: Any) -> Any:
        for fsdp_param in self.fsdp_params:
            grad = fsdp_param._unsharded_param.grad if hasattr(fsdp_param, "_unsharded_param") else None
            tracker.mark(UNSHARDED_GRADS, [grad])
        return post_backward(self, *args, **kwargs)

    FSDPParam.init_all_gather_outputs = init_all_gather_outputs  # type: ignore[method-assign]
    FSDPParamGroup.post_backward = tagged_post_backward  # type: ignore[method-assign]


def _unwrapped(method: Any) -> Any:
    """The method as torch defines it, under any tagging wrapper a previous trace in this process added."""
    return getattr(method, "__wrapped__", method)
