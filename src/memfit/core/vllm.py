"""vLLM's KV capacity, sized as vLLM V1 sizes it (0.11-0.20), and the `vllm serve` flags of a workload.

`vllm_parts` replaces the prefill phase by vLLM's profile run (core/vllm_profile.py) and, on a known GPU,
gives the KV cache what `ceil(total × gpu_memory_utilization)` leaves after weights, the profile run's torch
peak, the non-torch increase and (0.20+) the CUDA-graph estimate; `--kv-cache-memory` bypasses that.
The tokens are whole blocks per KV cache group as vLLM's hybrid allocator forms them
(v1/core/kv_cache_utils.py get_kv_cache_groups, get_kv_cache_config_from_groups, _report_kv_cache_config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from memfit.core.choices import PhaseName
from memfit.core.kv_cache import cache_dtypes, compute_dtype, per_token_widths
from memfit.core.overhead import CUDA_CONTEXT_BYTES, cublas_workspace_bytes
from memfit.core.result import Gpu, KvCapacity, Phase, Term, memory, replace_terms
from memfit.core.runtimes import profile
from memfit.core.spec import ModelSpec, attention_of
from memfit.core.vllm_profile import (
    NEWEST_MODELED,
    OLDEST_MODELED,
    VllmSettings,
    cudagraph_estimate,
    forward_peak,
    non_torch_increase,
    sampler_peak,
    vllm_settings,
)
from memfit.core.weights import tensor_bytes
from memfit.core.workload import DEFAULT_BLOCK_SIZE, Inference

DEFAULT_GPU_MEMORY_UTILIZATION = Fraction(9, 10)
"""Source: vllm config/cache.py CacheConfig.gpu_memory_utilization default 0.9."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KvLayout:
    """vLLM's KV cache groups on one rank: `group_size` layers per group, `num_groups` groups, every group's
    block taking `page_bytes` per layer (`uniform_page`), or one group of layers with unequal pages."""

    page_bytes_per_token: int     # per layer and token (uniform page); the sum over layers otherwise
    group_size: int               # layers per group (1 when not uniform: page_bytes_per_token is the sum)
    num_groups: int
    windows: tuple[tuple[int | None, int], ...]   # (sliding window or None, groups of that kind)

    @property
    def bytes_per_block_token(self) -> int:
        """Bytes a block takes per token in every tensor it spans: page × group_size."""
        return self.page_bytes_per_token * self.group_size


def kv_layout(spec: ModelSpec, workload: Inference) -> KvLayout:
    """The KV cache groups vLLM forms for this rank's layers.

    One spec for every layer: one group of all layers. Full attention with unequal pages (per-layer KV
    heads): one group whose block spans every layer. Several kinds (sliding and full) with one page size:
    group_size = the fewest layers of a kind; each kind is split into ceil(count / group_size) groups
    (padding the last), and every block serves group_size layers.
    Source: vllm v1/core/kv_cache_utils.py get_kv_cache_groups, _get_kv_cache_groups_uniform_page_size,
    get_kv_cache_config_from_groups (0.11.2-0.20.0).
    """
    prof = profile(workload.runtime)
    k_dtype, v_dtype = cache_dtypes(spec, workload)
    tp, pp = workload.parallel.tp, workload.parallel.pp
    layers = spec.layers[: -(-len(spec.layers) // pp)]
    kinds: dict[tuple[int | None, int], int] = {}
    for layer in layers:
        att = attention_of(layer)
        k_width, v_width = per_token_widths(att, prof, tp=tp)
        page = tensor_bytes(k_dtype, k_width) + tensor_bytes(v_dtype, v_width)
        window = att.sliding_window if prof.sliding_cache_window else None
        kinds[(window, page)] = kinds.get((window, page), 0) + 1
    pages = {page for _, page in kinds}
    if len(kinds) == 1:
        (window, page), count = next(iter(kinds.items()))
        return KvLayout(page_bytes_per_token=page, group_size=count, num_groups=1, windows=((window, 1),))
    if len(pages) > 1:
        # unequal pages: one block spans every layer (vLLM's UniformTypeKVCacheSpecs for full attention)
        total = sum(page * count for (_, page), count in kinds.items())
        return KvLayout(page_bytes_per_token=total, group_size=1, num_groups=1, windows=((None, 1),))
    group_size = min(kinds.values())
    per_window: dict[int | None, int] = {}
    for (window, _), count in kinds.items():
        per_window[window] = per_window.get(window, 0) + -(-count // group_size)
    return KvLayout(page_bytes_per_token=pages.pop(), group_size=group_size,
                    num_groups=sum(per_window.values()), windows=tuple(per_window.items()))


def kv_blocks(layout: KvLayout, *, available_bytes: int, block_size: int) -> int:
    """Blocks vLLM allocates: available // (page × group_size), a page being block_size tokens.
    Source: vllm kv_cache_utils.get_num_blocks (available_memory // page_size // num_layers)."""
    page = layout.page_bytes_per_token * block_size
    return max(available_bytes // page // layout.group_size, 0)


def capacity_tokens(layout: KvLayout, *, num_blocks: int, block_size: int) -> int:
    """The tokens vLLM logs ("GPU KV cache size: N tokens"): num_blocks // num_groups × block_size.
    Source: vllm kv_cache_utils._report_kv_cache_config."""
    return num_blocks // layout.num_groups * block_size


def blocks_per_request(layout: KvLayout, settings: VllmSettings) -> int:
    """Blocks one request of max_model_len tokens needs at most, over all groups: full attention
    cdiv(max_model_len, block); a sliding window cdiv(min(window − 1 + max_num_batched_tokens,
    max_model_len), block) + 1. Source: vllm kv_cache_interface.FullAttentionSpec / SlidingWindowSpec
    max_memory_usage_bytes; kv_cache_utils.get_max_concurrency_for_kv_cache_config."""
    block = settings.block_size
    total = 0
    for window, groups in layout.windows:
        if window is None:
            total += groups * -(-settings.max_model_len // block)
        else:
            tokens = min(window - 1 + settings.max_num_batched_tokens, settings.max_model_len)
            total += groups * (-(-tokens // block) + 1)
    return total


@dataclass(frozen=True, slots=True, kw_only=True)
class VllmProfile:
    """What vLLM counts before sizing the KV cache, per GPU."""

    settings: VllmSettings
    weights: Term
    activations: Term        # top-level "activations": the profile forward, or what the sampler holds of it
    logits: Term             # top-level "logits": the sampler's logits and buffers when it is the peak
    non_torch: Term          # non-torch increase since the start-up snapshot
    cuda_graphs: Term | None  # 0.20+: subtracted from the budget
    workspace: Term          # the BLAS workspace the profile forward's first matmul allocates (torch peak)

    @property
    def non_kv_bytes(self) -> int:
        graphs = self.cuda_graphs.nbytes if self.cuda_graphs is not None else 0
        return (self.weights.nbytes + self.activations.nbytes + self.logits.nbytes + self.non_torch.nbytes
                + self.workspace.nbytes + graphs)

    @property
    def peak_name(self) -> str:
        """Which part of the profile run peaks: the forward or the sampler."""
        return "sampler" if self.logits.nbytes else "forward"


def vllm_profile(spec: ModelSpec, workload: Inference, weights: Term, gpu: Gpu | None) -> VllmProfile:
    """vLLM's profile run on one rank: weights as loaded, the larger of the forward and sampler peaks,
    the non-torch increase, and (0.20+, graphs on, CUDA) the CUDA-graph estimate."""
    prof = profile(workload.runtime)
    num, den = prof.default_gpu_memory_utilization or (9, 10)
    mla = any(attention_of(layer).mla is not None for layer in spec.layers)
    settings = vllm_settings(workload, gpu, default_utilization=Fraction(num, den), mla=mla)
    dtype = compute_dtype(spec, workload)
    tp = workload.parallel.tp
    fp8 = (spec.stored_quant is not None and spec.stored_quant.kind == "fp8") or workload.quant.kind == "fp8"
    forward = forward_peak(spec, tokens=settings.max_num_batched_tokens, tp=tp, dtype=dtype,
                           fp8_activations=fp8, ep=workload.parallel.ep)
    sampler = sampler_peak(spec, settings, dtype=dtype)
    if forward.nbytes >= sampler.nbytes:
        activations, logits = Term.group("activations", [forward]), Term.group("logits", [])
    else:
        held = sampler.child("forward_hidden_states")
        assert held is not None
        activations = Term.group("activations", [held])
        logits = Term.group("logits", [c for c in sampler.children if c is not held],
                            note=sampler.note)
    graphs = cudagraph_estimate(spec, settings, tp=tp, dtype=dtype) if settings.applies_cudagraph_estimate \
        else None
    return VllmProfile(settings=settings, weights=weights,
                       activations=activations, logits=logits,
                       non_torch=non_torch_increase(workload), cuda_graphs=graphs,
                       workspace=Term(name="cublas_workspace", nbytes=cublas_workspace_bytes(gpu=gpu),
                                      note="through the caching allocator: inside the profile's torch peak"))


def kv_capacity(spec: ModelSpec, workload: Inference, vprof: VllmProfile, *,
                gpu_usable_bytes: int) -> KvCapacity:
    """The KV capacity vLLM allocates on one GPU.

    requested = ceil(total × gpu_memory_utilization); available = requested − non_kv (or --kv-cache-memory);
    blocks = available // (block_size × page × group_size); tokens = blocks // groups × block_size.
    Source: vllm v1/worker/utils.py request_memory (0.18: math.ceil), gpu_worker.determine_available_memory.
    """
    settings = vprof.settings
    requested = math.ceil(gpu_usable_bytes * settings.utilization)
    available = settings.kv_cache_memory_bytes if settings.kv_cache_memory_bytes is not None \
        else requested - vprof.non_kv_bytes
    if not starts(vprof, requested=requested, gpu_usable_bytes=gpu_usable_bytes):
        available = 0
    layout = kv_layout(spec, workload)
    blocks = kv_blocks(layout, available_bytes=max(available, 0), block_size=settings.block_size)
    tokens = capacity_tokens(layout, num_blocks=blocks, block_size=settings.block_size)
    return KvCapacity(utilization=settings.utilization, budget_bytes=requested, tokens=tokens,
                      nbytes=blocks * settings.block_size * layout.bytes_per_block_token,
                      sequence_tokens=-(-workload.total_tokens // settings.block_size) * settings.block_size,
                      batch_size=workload.batch_size)


def starts(vprof: VllmProfile, *, requested: int, gpu_usable_bytes: int) -> bool:
    """Whether vLLM starts at all: the memory left after CUDA init must cover the request (or, with
    --kv-cache-memory, the non-KV memory plus the given cache).
    Source: vllm v1/worker/gpu_worker.py init_device / utils.request_memory ("Free memory on device ... is
    less than desired GPU memory utilization")."""
    free_after_init = gpu_usable_bytes - CUDA_CONTEXT_BYTES
    kv_given = vprof.settings.kv_cache_memory_bytes
    if kv_given is not None:
        return vprof.non_kv_bytes + kv_given <= free_after_init
    return requested <= free_after_init


def vllm_max_concurrency(spec: ModelSpec, workload: Inference, vprof: VllmProfile,
                         capacity: KvCapacity) -> Fraction:
    """vLLM's "Maximum concurrency for max_model_len tokens per request": blocks / blocks per request.
    Equal to tokens / sequence tokens for full attention; larger with sliding windows."""
    layout = kv_layout(spec, workload)
    block = vprof.settings.block_size
    num_blocks = capacity.nbytes // max(block * layout.bytes_per_block_token, 1)
    return Fraction(num_blocks, max(blocks_per_request(layout, vprof.settings), 1))


def assumption_lines(vprof: VllmProfile, *, gpu: Gpu | None, tp_replicated: str | None) -> list[str]:
    """The assumptions behind the vLLM figures, one line each."""
    s = vprof.settings
    version = ".".join(map(str, s.version))
    span = f"{'.'.join(map(str, OLDEST_MODELED))}-{'.'.join(map(str, NEWEST_MODELED))}"
    outside = "" if s.in_modeled_range else "; this version is outside it: figures unverified"
    defaults = "" if gpu is not None else " (vllm serve defaults for a GPU of 70 GiB or more)"
    lines = [
        f"vLLM {version} V1 memory profile (modelled range {span}{outside}): max_num_batched_tokens="
        f"{s.max_num_batched_tokens:,}, max_num_seqs={s.max_num_seqs:,}, block_size={s.block_size}{defaults}",
        "vLLM counts weights + the profile run's torch peak increase (forward of max_num_batched_tokens "
        "or the sampler on max_num_seqs rows, whichever is larger) + the non-torch increase since its "
        "start-up snapshot (the CUDA context is before it and not counted)",
    ]
    if vprof.cuda_graphs is not None:
        lines.append("vLLM 0.20+: its CUDA-graph estimate is subtracted from the KV budget (approximated: "
                     "per-layer boundary tensors at the largest capture size, 1 MiB per further graph)")
    elif not s.enforce_eager:
        lines.append(f"vLLM {version}: CUDA graphs are captured after the KV cache is sized (their memory "
                     "comes out of the headroom, not the KV cache)")
    if s.kv_cache_memory_bytes is not None:
        lines.append(f"--kv-cache-memory {s.kv_cache_memory_bytes:,} B: the KV cache size is given; "
                     "gpu_memory_utilization and the profile do not size it")
    if tp_replicated:
        lines.append(tp_replicated)
    return lines


def vllm_parts(spec: ModelSpec, workload: Inference, raw: tuple[Phase, ...], gpu: Gpu | None,
               assumptions: list[str]) -> tuple[tuple[Phase, ...], KvCapacity | None]:
    """The vLLM phases: load as loaded; prefill = the profile run's peak (with the KV capacity as the cache
    on a GPU, else the requested batch's cache); decode as built by torch_phases, holding the capacity."""
    load = raw[0]
    weights = load.memory.child("weights")
    assert weights is not None
    vprof = vllm_profile(spec, workload, weights, gpu)
    tp = workload.parallel.tp
    replicated = None
    kv_heads = {att.num_kv_heads for att in map(attention_of, spec.layers) if att.mla is None}
    if kv_heads and tp > min(kv_heads):
        replicated = (f"tp={tp} exceeds num_kv_heads={min(kv_heads)}: vLLM replicates KV heads, each rank "
                      f"keeps 1 head ({tp // min(kv_heads)} ranks share each)")
    assumptions += assumption_lines(vprof, gpu=gpu, tp_replicated=replicated)
    if workload.parallel.ep > 1:
        assumptions.append(f"vllm --enable-expert-parallel: each of the ep={workload.parallel.ep} ranks "
                           "holds whole experts (num_experts / ep), attention stays tp-sliced; all2all "
                           "backend buffers (data parallel: pplx, DeepEP) and EPLB redundant experts are "
                           "not modelled")
    prefill_raw = next(p for p in raw if p.name is PhaseName.PREFILL)
    cache = prefill_raw.memory.child("kv_cache")
    capacity = None
    if gpu is not None:
        capacity = kv_capacity(spec, workload, vprof, gpu_usable_bytes=gpu.usable_bytes)
        concurrency = vllm_max_concurrency(spec, workload, vprof, capacity)
        if not starts(vprof, requested=capacity.budget_bytes, gpu_usable_bytes=gpu.usable_bytes):
            assumptions.append(f"vllm would not start on {gpu.name}: after the CUDA context "
                               f"({CUDA_CONTEXT_BYTES:,} B) less memory is free than it requests")
        assumptions.append(
            f"vllm: {capacity.describe()} on {gpu.name} (ceil({capacity.utilization} × "
            f"{gpu.usable_bytes:,} B) = "
            f"{capacity.budget_bytes:,} B requested, less {vprof.non_kv_bytes:,} B of weights, profile "
            f"peak, non-torch increase{' and CUDA graphs' if vprof.cuda_graphs is not None else ''}); "
            f"vLLM's maximum concurrency for {vprof.settings.max_model_len:,} tokens per request: "
            f"{float(concurrency):.2f}x; the job fits only if the batch fits in it")
        cache = Term.group("kv_cache", [Term(name="paged_blocks", nbytes=capacity.nbytes,
                                             note=capacity.describe())])
    else:
        assumptions.append("vllm: KV cache sized for the requested batch and length; the capacity "
                           "gpu_memory_utilization leaves (and whether it holds the batch) needs --gpu")
    assert cache is not None
    context = Term(name="cuda_context", nbytes=CUDA_CONTEXT_BYTES,
                   note="before vLLM's start-up snapshot: not in its budget")
    non_torch = Term.group("non_torch", [context, *vprof.non_torch.children])
    terms = [weights, cache, vprof.activations, vprof.logits, Term.group("fragmentation", [])]
    graphs = [vprof.cuda_graphs] if vprof.cuda_graphs is not None else []
    terms.append(Term.group("runtime_overhead", [vprof.workspace, *graphs]))
    prefill = Phase(name=PhaseName.PREFILL, memory=memory([*terms, non_torch]),
                    at=f"vLLM profile run peak ({vprof.peak_name})")
    out = [load, prefill]
    for phase in raw[2:]:
        out.append(replace_terms(phase, cache) if capacity is not None else phase)
    return tuple(out), capacity


def vllm_serve_flags(spec: ModelSpec, workload: Inference, gpu: Gpu | None = None) -> list[str]:
    """The `vllm serve` command line that realises `workload`: the model (and revision), parallel sizes,
    max_model_len = prompt + new tokens, and each vLLM setting the workload gives; vLLM's own defaults are
    left out except gpu_memory_utilization, always written (the batch size is a load, not a flag: vLLM
    serves as many sequences as its capacity holds, up to max_num_seqs). `gpu` is accepted for callers
    that plan per GPU; none of these flags depends on it.
    Source: vllm engine/arg_utils.py EngineArgs (flag names)."""
    args = ["vllm", "serve", spec.source.ref]
    if spec.source.revision:
        args += ["--revision", spec.source.revision]
    par = workload.parallel
    if par.tp > 1:
        args += ["--tensor-parallel-size", str(par.tp)]
    if par.pp > 1:
        args += ["--pipeline-parallel-size", str(par.pp)]
    if par.ep > 1:
        if par.dp > 1:
            args += ["--data-parallel-size", str(par.dp)]
        args.append("--enable-expert-parallel")
    args += ["--max-model-len", str(workload.total_tokens)]
    if workload.dtype is not None:
        args += ["--dtype", _VLLM_DTYPES.get(str(workload.dtype), str(workload.dtype))]
    if workload.quant.kind == "fp8" and spec.stored_quant is None:
        args += ["--quantization", "fp8"]
    if workload.kv_cache_dtype is not None and workload.kv_cache_dtype.bits_per_element == 8:
        args += ["--kv-cache-dtype", "fp8"]
    if workload.kv_cache_memory is not None:
        args += ["--kv-cache-memory", str(workload.kv_cache_memory)]
    else:
        utilization = workload.gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION
        args += ["--gpu-memory-utilization", _decimal(utilization)]
    if workload.max_num_seqs is not None:
        args += ["--max-num-seqs", str(workload.max_num_seqs)]
    if workload.max_num_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(workload.max_num_batched_tokens)]
    if workload.block_size != DEFAULT_BLOCK_SIZE:
        args += ["--block-size", str(workload.block_size)]
    if workload.enforce_eager:
        args.append("--enforce-eager")
    return args


_VLLM_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _decimal(value: Fraction) -> str:
    """A fraction as the shortest decimal vLLM parses (0.9, 0.92, 0.875); 4 places when it does not end."""
    for places in range(1, 5):
        scaled = value * 10**places
        if scaled.denominator == 1:
            return f"{float(value):.{places}f}"
    return f"{float(value):.4f}"


