"""Inference phases (load, prefill, decode) of one job on the most loaded GPU, with their assumptions.

`inference_phases(spec, workload, gpu=None)` validates the workload against the model and the runtime's
profile, then builds each phase's memory tree at its peak:
- load: the weights as loaded;
- prefill: weights + KV cache + the larger of (last layer's working set with the whole prompt cached) and
  (the LM head moment: final hidden state + logits), + cuBLAS workspace and dequantisation buffers;
- decode (new_tokens > 0): weights + the final cache + torch.cat's one-layer growth copy + one decode
  step's working set + last-position logits.
Reserved and device bytes come from overhead.reserved_and_device_terms with the exact segment rounding of
weights and cache tensors. llama.cpp's own buffers are allocated == reserved; its off-GPU layers are
`Phase.host`. A preallocating runtime (vLLM) on a known GPU holds the KV capacity its budget leaves
(`inference_parts`, `KvCapacity`); transformers' device_map="auto" under a per-GPU cap places modules as
accelerate does (`auto_device_map`), offloaded weights in `Phase.host`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from memfit.core.choices import DeviceMap, KvCache, PhaseName
from memfit.core.errors import InvalidWorkload
from memfit.core.kv_cache import (
    compute_dtype,
    effective_kv_cache,
    final_cache_tokens,
    kv_bytes_per_token,
    kv_cache_at,
    kv_layer_bytes,
    kv_tensor_groups,
)
from memfit.core.logits import logits
from memfit.core.overhead import (
    FREED_POOL_SLACK,
    POOL_SLACK,
    Repeated,
    cublas_workspace_bytes,
    reserved_and_device_terms,
    round_block,
    segment_waste_repeated,
)
from memfit.core.parallel import validate_parallel
from memfit.core.result import Gpu, Phase, Term, memory, replace_terms
from memfit.core.runtimes import RuntimeProfile, check_runtime_supports, profile
from memfit.core.spec import ModelSpec, MoeSpec
from memfit.core.transients import (
    Step,
    decode_step,
    input_bytes,
    layer_peak,
    layer_working_sets,
    prefill_step,
)
from memfit.core.weights import weight_tensor_groups, weights, weights_tree_groups
from memfit.core.workload import Inference

RANDOM_INIT_TIED_HEAD = True
"""Model the reserved bytes of a random-weight build (`from_config`, as memfit measure and the groundtruth
do): a tied LM head is allocated once before tying, and its freed block stays cached.
Source: groundtruth Llama-3.2-1B rows: load peak_alloc − end_alloc = 526,385,152 B (vocab × hidden × 2)."""
LLAMA_CPP_CONTEXT_BYTES = 300 * 2**20
"""Device memory of a llama.cpp CUDA process before buffers (context, cuBLAS handle).
Source: estimate; llama.cpp does not report it (marked in assumptions)."""


def inference_phases(spec: ModelSpec, workload: Inference,
                     gpu: Gpu | None = None) -> tuple[tuple[Phase, ...], tuple[str, ...]]:
    """The load, prefill and (when generating) decode phases, and the assumptions behind them.

    With a `gpu`, a preallocating runtime (vLLM) gets its KV cache sized as the capacity its budget leaves
    (see `inference_parts`).

    Raises:
        InvalidWorkload: the workload is impossible for this model or runtime (one line naming the field).
    """
    phases, assumptions, _ = inference_parts(spec, workload, gpu)
    return phases, assumptions


def inference_parts(spec: ModelSpec, workload: Inference,
                    gpu: Gpu | None = None) -> tuple[tuple[Phase, ...], tuple[str, ...], KvCapacity | None]:
    """`inference_phases`, plus the KV capacity of a preallocating runtime on `gpu` (None otherwise).

    A preallocating runtime (vLLM) takes gpu_memory_utilization × usable bytes up front; what weights,
    the profiling run's activations and the process overhead leave becomes KV blocks. With a GPU the
    prefill and decode phases hold that whole capacity as their `kv_cache`, and the job fits only when it
    holds batch_size sequences of prompt + new tokens (each rounded up to whole blocks). Without a GPU the
    cache is sized for the requested batch and length, and an assumption says the capacity needs a GPU.

    Raises:
        InvalidWorkload: the workload is impossible for this model or runtime (one line naming the field).
    """
    prof = profile(workload.runtime)
    kind = validate(spec, workload, prof)
    assumptions = [f"runtime {prof.runtime}: {prof.source}", f"KV cache: {kind}",
                   f"compute dtype {compute_dtype(spec, workload)}"]
    if not prof.torch_allocator:
        assumptions += ["llama.cpp: own buffers, allocated = reserved; token_embd stays in host RAM; the "
                        "compute buffer is approximated as one ubatch's fp32 layer intermediates; the CUDA "
                        "context is an estimate (LLAMA_CPP_CONTEXT_BYTES)"]
        return _llama_cpp_phases(spec, workload, prof), tuple(assumptions), None
    if _auto_map_applies(workload, prof):
        return _device_map_phases(spec, workload, prof, kind, assumptions), tuple(assumptions), None
    raw = _torch_phases(spec, workload, prof, kind, assumptions)
    phases = _carry_reserved(raw)
    if not prof.preallocates_fraction:
        return phases, tuple(assumptions), None
    if gpu is None:
        assumptions.append(f"{prof.runtime}: KV cache sized for the requested batch and length; the capacity "
                           "gpu_memory_utilization leaves (and whether it holds the batch) needs --gpu")
        return phases, tuple(assumptions), None
    capacity = kv_capacity(spec, workload, phases, gpu_usable_bytes=gpu.usable_bytes)
    assumptions.append(f"{prof.runtime}: {capacity.describe()} on {gpu.name} ({capacity.utilization} × "
                       f"{gpu.usable_bytes:,} B usable = {capacity.budget_bytes:,} B budget, less weights, "
                       "profiled activations and overhead); the job fits only if the batch fits in it")
    cache = Term.group("kv_cache", [Term(name="paged_blocks", nbytes=capacity.nbytes,
                                         note=capacity.describe())])
    held = _carry_reserved(tuple(p if p.name is PhaseName.LOAD else replace_terms(p, cache) for p in raw))
    return held, tuple(assumptions), capacity


@dataclass(frozen=True, slots=True, kw_only=True)
class KvCapacity:
    """The KV cache a preallocating runtime (vLLM) allocates from its budget, and what the job needs."""

    utilization: Fraction       # gpu_memory_utilization
    budget_bytes: int           # utilization × usable bytes
    tokens: int                 # capacity in tokens (whole blocks)
    nbytes: int                 # capacity in bytes: tokens × bytes per token
    sequence_tokens: int        # one sequence of prompt + new tokens, rounded up to whole blocks
    batch_size: int

    @property
    def sequences(self) -> int:
        """Whole sequences of the requested length the capacity holds."""
        return self.tokens // max(self.sequence_tokens, 1)

    @property
    def holds_batch(self) -> bool:
        """Whether batch_size sequences of the requested length fit in the capacity."""
        return self.tokens >= self.batch_size * self.sequence_tokens

    def describe(self) -> str:
        """One line: the capacity in tokens and in sequences of the requested length."""
        return (f"KV capacity {self.tokens:,} tokens = {self.sequences:,} sequences of "
                f"{self.sequence_tokens:,} tokens (batch {self.batch_size:,} asked)")


def kv_capacity(spec: ModelSpec, workload: Inference, phases: tuple[Phase, ...], *,
                gpu_usable_bytes: int) -> KvCapacity:
    """The KV capacity vLLM allocates: gpu_memory_utilization × usable − (the prefill's device bytes
    without its cache: weights, profiled activations, overhead), in whole blocks of the per-token bytes.

    Source: vLLM gpu_worker.determine_available_memory (requested memory − non-KV peak of the profile run);
    KVCacheManager allocates whole blocks of block_size tokens.
    """
    prof = profile(workload.runtime)
    num, den = prof.default_gpu_memory_utilization or (9, 10)
    utilization = workload.gpu_memory_utilization or Fraction(num, den)
    budget = int(gpu_usable_bytes * utilization)
    prefill = next(p for p in phases if p.name is PhaseName.PREFILL)
    used = prefill.device_bytes - prefill.memory.bytes_of("kv_cache")
    per_token = max(kv_bytes_per_token(spec, workload), 1)
    block = workload.block_size
    tokens = max(budget - used, 0) // per_token // block * block
    return KvCapacity(utilization=utilization, budget_bytes=budget, tokens=tokens, nbytes=tokens * per_token,
                      sequence_tokens=-(-workload.total_tokens // block) * block,
                      batch_size=workload.batch_size)


def validate(spec: ModelSpec, workload: Inference, prof: RuntimeProfile) -> KvCache:
    """Check the workload against the model and the runtime; return the effective cache kind."""
    check_runtime_supports(prof.runtime, quant_kind=workload.quant.kind, quant_name=workload.quant.name,
                           kv_cache=effective_kv_cache(workload, prof))
    total = workload.total_tokens
    if total > spec.max_position_embeddings and not workload.allow_longer:
        raise InvalidWorkload(
            f"prompt_tokens + new_tokens = {total} exceeds max_position_embeddings="
            f"{spec.max_position_embeddings} of {spec.name}; shorten the job or set allow_longer")
    validate_parallel(spec, workload.parallel)
    return effective_kv_cache(workload, prof)


def _gpu_weights(spec: ModelSpec, workload: Inference) -> tuple[Term, list[Repeated]]:
    """Weights on the most loaded GPU and their tensor sizes (runs of equal layers grouped): 1/tp of each
    tensor, ceil(layers/pp) layers."""
    dtype = compute_dtype(spec, workload)
    groups = weight_tensor_groups(spec, dtype=dtype, quant=workload.quant, runtime=workload.runtime)
    term = weights_tree_groups(groups)
    tp, pp = workload.parallel.tp, workload.parallel.pp
    if tp == 1 and pp == 1:
        return term, [(tuple(b for _, b in tensors), times) for tensors, times in groups]
    layer_share = -(-spec.num_layers // pp)
    scaled = _scale_term(term, tp=tp, layer_fraction=(layer_share, spec.num_layers), pp=pp)
    if pp == 1:
        return scaled, [(tuple(-(-b // tp) for _, b in tensors), times) for tensors, times in groups]
    sizes = [-(-b // tp) for tensors, times in groups for _ in range(times) for _, b in tensors]
    # segment rounding of this stage's share of the tensors
    return scaled, [(tuple(sizes[: max(1, len(sizes) * layer_share // spec.num_layers)]), 1)]


def _scale_term(term: Term, *, tp: int, layer_fraction: tuple[int, int], pp: int) -> Term:
    """Weights of the most loaded GPU: every tensor split tp ways (tensor parallel shards matrices and the
    vocabulary), layers cut to this stage's share under pp / device_map. Simple and honest: no replicated
    norms, no uneven device_map budgets."""
    def scale(t: Term, in_layers: bool) -> Term:
        if t.children:
            return Term.group(t.name, [scale(c, in_layers or t.name == "layers") for c in t.children])
        nbytes = -(-t.nbytes // tp)
        if in_layers:
            nbytes = nbytes * layer_fraction[0] // layer_fraction[1]
        return replace(t, nbytes=nbytes)

    scaled = scale(term, False)
    if pp == 1:
        return scaled
    # the most loaded stage holds its layers plus the larger of the embeddings and the LM head
    edge = max(scaled.bytes_of("embeddings"), scaled.bytes_of("lm_head") + scaled.bytes_of("final_norm"))
    kept = [c for c in scaled.children if c.name == "layers"]
    return Term.group("weights", [*kept, Term(name="embeddings_or_lm_head", nbytes=edge)])


def _persistent_waste(groups: list[Repeated]) -> int:
    """Reserved − allocated of tensors that are never freed (segment rounding), given as repeated groups."""
    return segment_waste_repeated(groups)


def _overhead(workload: Inference, dequant: int) -> Term:
    return Term.group("runtime_overhead", [
        Term(name="cublas_workspace", nbytes=cublas_workspace_bytes()),
        Term(name="dequant", nbytes=dequant, note="dequantised weight and quantised input copies"),
    ])


def _phase(name: PhaseName, terms: list[Term], workload: Inference, *, waste: int, floor: int,
           at: str, pool_slack: Fraction = POOL_SLACK) -> Phase:
    allocated = memory(terms)
    frag, non_torch = reserved_and_device_terms(allocated, workload, persistent_waste_bytes=waste,
                                                cached_floor_bytes=floor, pool_slack=pool_slack)
    return Phase(name=name, memory=memory([*terms, frag, non_torch]), at=at)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Job:
    """What every torch-allocator phase shares: the job, the weights on this GPU and the cache lengths."""

    spec: ModelSpec
    workload: Inference
    prof: RuntimeProfile
    kind: KvCache
    weights: Term
    weight_waste: int
    floor: int
    inputs: Term
    cache_tokens: int      # cached tokens per sequence during prefill
    final_tokens: int      # after the last decode step


def _torch_phases(spec: ModelSpec, workload: Inference, prof: RuntimeProfile, kind: KvCache,
                  assumptions: list[str]) -> tuple[Phase, ...]:
    """The torch-allocator phases, each at its own peak (callers apply `_carry_reserved`)."""
    weights_term, weight_sizes = _gpu_weights(spec, workload)
    floor = _init_floor(spec, workload, weights_term)
    if floor:
        assumptions.append("reserved includes the tied LM head that from_config allocates before tying "
                           "(random-weight build); a from_pretrained load does not have it")
    final_tokens = final_cache_tokens(workload)
    cache_tokens = workload.prompt_tokens
    if kind is KvCache.STATIC:
        cache_tokens = workload.max_cache_tokens or final_tokens
    if kind is KvCache.PAGED:
        cache_tokens = final_tokens
    job = _Job(spec=spec, workload=workload, prof=prof, kind=kind, weights=weights_term,
               weight_waste=_persistent_waste(weight_sizes), floor=floor,
               inputs=Term(name="inputs", nbytes=input_bytes(workload, generating=workload.new_tokens > 0)),
               cache_tokens=cache_tokens, final_tokens=final_tokens)
    load = _phase(PhaseName.LOAD, [weights_term], workload, waste=job.weight_waste, floor=floor,
                  at="weights loaded")
    prefill = _prefill_phase(job, assumptions)
    if workload.new_tokens < 2:   # the first new token comes from the prefill's logits
        return (load, prefill)
    if kind is KvCache.STATIC and prof.auto_compile_static_cache:
        assumptions.append("generate() compiles decode with CUDA graphs for a static cache (not sized)")
    return (load, prefill, _decode_phase(job))


def _prefill_phase(job: _Job, assumptions: list[str]) -> Phase:
    """The prefill at its peak: the last layer with the whole prompt cached, or the LM head moment."""
    spec, workload = job.spec, job.workload
    cache = kv_cache_at(spec, workload, tokens=job.cache_tokens, after_decode=False)
    waste = job.weight_waste + _persistent_waste(kv_tensor_groups(spec, workload, tokens=job.cache_tokens))
    acts, dequant = _prefill_layer_peak(spec, workload, job.prof, kind=job.kind,
                                        cache_tokens=job.cache_tokens, assumptions=assumptions)
    layer_cache = cache
    if job.prof.max_batched_tokens is None:
        found = _prefill_peak_layer(spec, workload, kind=job.kind, cache_tokens=job.cache_tokens)
        if found is not None:
            acts, dequant, layer_cache = found
    layer_terms = [job.weights, layer_cache, Term.group("activations", [*acts.children, job.inputs]),
                   _overhead(workload, dequant)]
    generating = workload.new_tokens > 0
    positions = 1 if generating or job.prof.max_batched_tokens else workload.prompt_tokens
    dt = compute_dtype(spec, workload)
    final_hidden = Term(name="final_hidden",
                        nbytes=workload.batch_size * dt.nbytes(positions * spec.hidden_size))
    head_terms = [job.weights, cache, Term.group("activations", [final_hidden, job.inputs]),
                  logits(spec, workload, positions=positions), _overhead(workload, 0)]
    if sum(t.nbytes for t in layer_terms) >= sum(t.nbytes for t in head_terms):
        return _phase(PhaseName.PREFILL, layer_terms, workload, waste=waste, floor=job.floor,
                      at="last decoder layer")
    # the layers' freed blocks stay cached beside the logits
    freed_pool = int(FREED_POOL_SLACK * (acts.nbytes + dequant))
    return _phase(PhaseName.PREFILL, head_terms, workload, waste=waste, floor=max(job.floor, freed_pool),
                  at="LM head", pool_slack=Fraction(0))


def _decode_phase(job: _Job) -> Phase:
    """The last decode step at its peak: the cache at its final length plus either the last layer's
    working set with torch.cat's copy of one layer's K or V, or the LM head's last-position logits."""
    spec, workload = job.spec, job.workload
    cache_len = job.cache_tokens if job.kind is KvCache.STATIC else job.final_tokens
    final_cache = kv_cache_at(spec, workload, tokens=cache_len, after_decode=True)
    if job.kind is KvCache.DYNAMIC:
        # the first decode step: sliding layers the forward has not reached yet still hold the prompt's
        # full-length storage (a view of it), so with prompt > window the cache peaks there, not at the end.
        # Source: real generate() on CPU with a tiny gemma3_text (window 16, prompt 40): 40 tokens of
        # storage per sliding layer until that layer's first decode update, then 16.
        first_cache = kv_cache_at(spec, workload, tokens=workload.prompt_tokens + 1, after_decode=False)
        final_cache = max(final_cache, first_cache, key=lambda t: t.nbytes)
    tensors = kv_tensor_groups(spec, workload, tokens=cache_len)
    waste = job.weight_waste + _persistent_waste(tensors)
    cat_growth = job.kind is KvCache.DYNAMIC and job.prof.kv_cat_growth
    growth = max((max(sizes) for sizes, _ in tensors), default=0) if cat_growth else 0
    acts, dequant = layer_peak(spec, workload, decode_step(workload, kind=job.kind, cache_tokens=cache_len))
    layer_terms = [job.weights, final_cache,
                   Term.group("activations", [*acts.children, job.inputs,
                                              Term(name="kv_cat_copy", nbytes=growth)]),
                   _overhead(workload, dequant)]
    dt = compute_dtype(spec, workload)
    final_hidden = Term(name="final_hidden", nbytes=workload.batch_size * dt.nbytes(spec.hidden_size))
    head_terms = [job.weights, final_cache, Term.group("activations", [final_hidden, job.inputs]),
                  logits(spec, workload, positions=1), _overhead(workload, 0)]
    at_layer = sum(t.nbytes for t in layer_terms) >= sum(t.nbytes for t in head_terms)
    return _phase(PhaseName.DECODE, layer_terms if at_layer else head_terms, workload, waste=waste,
                  floor=job.floor, at="last decode step, " + ("last layer" if at_layer else "LM head"))


def allocator_slack_inputs(spec: ModelSpec, workload: Inference) -> tuple[int, int]:
    """(persistent_waste_bytes, cached_floor_bytes) to pass to overhead.reserved_and_device_terms.

    The segment rounding of the weights and of the final KV cache tensors, and the cached block of a
    random-init tied LM head: what the analytic phases use, for engines that build their own trees.
    """
    prof = profile(workload.runtime)
    kind = validate(spec, workload, prof)
    weights_term, sizes = _gpu_weights(spec, workload)
    tokens = final_cache_tokens(workload)
    if kind is KvCache.STATIC and workload.max_cache_tokens is not None:
        tokens = workload.max_cache_tokens
    waste = _persistent_waste(sizes) + _persistent_waste(kv_tensor_groups(spec, workload, tokens=tokens))
    return waste, _init_floor(spec, workload, weights_term)


def _init_floor(spec: ModelSpec, workload: Inference, weights_term: Term) -> int:
    """The cached block of a tied LM head allocated before tying (random-weight builds; see
    RANDOM_INIT_TIED_HEAD), 0 otherwise."""
    if RANDOM_INIT_TIED_HEAD and spec.tie_word_embeddings and not workload.quant.is_quantized:
        return round_block(weights_term.bytes_of("embeddings"))
    return 0


def _prefill_peak_layer(spec: ModelSpec, workload: Inference, *, kind: KvCache,
                        cache_tokens: int) -> tuple[Term, int, Term] | None:
    """(activations, dequantisation bytes, KV cache) at the prefill's peak layer: transformers allocates a
    layer's cache at its first update (DynamicCache's cat, StaticCache's lazy init), so while layer i runs
    only layers 0..i hold theirs. A masked sliding layer just before the last global one can outweigh the
    last layer (gemma-3-270m, 8k prompt: 32 MiB of global cache not yet allocated at the peak).
    None when the cache does not cover every layer on this GPU (device_map, llama.cpp's CPU layers).
    Source: transformers 5.17 cache_utils DynamicLayer.update / StaticLayer.lazy_initialization."""
    per_layer = kv_layer_bytes(spec, workload, tokens=cache_tokens)
    if len(per_layer) != spec.num_layers:
        return None
    sets = layer_working_sets(spec, workload, prefill_step(spec, workload, kind=kind,
                                                           cache_tokens=cache_tokens))
    held: dict[str, int] = {}
    best: tuple[int, Term, int, dict[str, int]] | None = None
    for layer, (name, nbytes) in zip(spec.layers, per_layer, strict=True):
        held[name] = held.get(name, 0) + nbytes
        acts, dequant = sets[id(layer)]
        total = acts.nbytes + dequant + sum(held.values())
        if best is None or total >= best[0]:
            best = (total, acts, dequant, dict(held))
    assert best is not None  # spec.layers is never empty
    cache = Term.group("kv_cache", [Term(name=n, nbytes=b) for n, b in best[3].items()])
    return best[1], best[2], cache


def _prefill_layer_peak(spec: ModelSpec, workload: Inference, prof: RuntimeProfile, *, kind: KvCache,
                        cache_tokens: int, assumptions: list[str]) -> tuple[Term, int]:
    """The prefill's largest layer working set; for a profiling runtime (vLLM), its profile run's.

    vLLM sizes activations with one dummy forward of max_num_batched_tokens tokens and keeps that memory;
    logits are computed for sampled positions only. Source: vLLM gpu_worker.determine_available_memory.
    """
    if prof.max_batched_tokens is None:
        return layer_peak(spec, workload, prefill_step(spec, workload, kind=kind, cache_tokens=cache_tokens))
    tokens = prof.max_batched_tokens
    assumptions.append(f"vLLM: activations from its profiling forward of {tokens} tokens; the rest of "
                       "gpu_memory_utilization × GPU memory becomes KV blocks (vllm_kv_capacity_tokens); "
                       "CUDA graph memory not sized")
    profile_run = replace(workload, batch_size=1, prompt_tokens=tokens, new_tokens=0, max_cache_tokens=None)
    return layer_peak(spec, profile_run, Step(query_tokens=tokens, kv_tokens=tokens, masked=False))


def _carry_reserved(phases: tuple[Phase, ...]) -> tuple[Phase, ...]:
    """Reserved bytes never shrink from phase to phase: the caching allocator keeps freed blocks.

    A phase reserving less than the one before gets a `fragmentation/cached_earlier` child making up the
    difference. Source: CUDACachingAllocator (segments are released only by empty_cache or on OOM).
    """
    out: list[Phase] = []
    for phase in phases:
        if out and phase.reserved_bytes < out[-1].reserved_bytes:
            missing = out[-1].reserved_bytes - phase.reserved_bytes
            frag = phase.memory.child("fragmentation")
            kids = frag.children if frag else ()
            frag = Term.group("fragmentation", [*kids, Term(name="cached_earlier", nbytes=missing)])
            phase = replace_terms(phase, frag)
        out.append(phase)
    return tuple(out)


BALANCED_BUFFER = Fraction(5, 4)
"""transformers' device_map="auto" balances GPUs: each but the last gets at most model/num_gpus + 1.25 × the
largest decoder layer. Source: transformers integrations/accelerate.get_balanced_memory (buffer = 1.25 ×
max(largest no-split block, mean leaf); the mean leaf is far smaller than a decoder layer in an LLM)."""


def _auto_map_applies(workload: Inference, prof: RuntimeProfile) -> bool:
    """device_map="auto" with a per-GPU cap on a runtime that splits by device_map (transformers), no TP."""
    par = workload.parallel
    return (prof.num_gpus_split == "device_map" and par.device_map is DeviceMap.AUTO
            and par.max_gpu_memory_bytes is not None and par.tp == 1)


def auto_device_map(sizes: list[int], *, num_gpus: int, cap_bytes: int, balance_buffer: int) -> list[int]:
    """The device of each module (0..num_gpus-1 a GPU, num_gpus the CPU), modules given in load order.

    accelerate's infer_auto_device_map on transformers' balanced budgets: every GPU but the last may hold
    min(cap, total/num_gpus + balance_buffer), the last the cap; modules go in order to the current GPU
    while they fit, else to the next; on GPU 0 (the main device, where CPU-offloaded layers run) the
    largest module still to place is kept free. What no GPU takes goes to the CPU.
    Source: transformers integrations/accelerate.py get_balanced_memory, infer_auto_device_map.
    """
    budgets = [cap_bytes] * num_gpus
    if num_gpus > 1:
        per_gpu = sum(sizes) // num_gpus + balance_buffer
        budgets[:-1] = [min(per_gpu, cap_bytes)] * (num_gpus - 1)
    largest_after = [0] * len(sizes)
    for i in range(len(sizes) - 2, -1, -1):
        largest_after[i] = max(largest_after[i + 1], sizes[i + 1])
    devices: list[int] = []
    device, used = 0, 0
    for i, size in enumerate(sizes):
        while device < num_gpus:
            room = budgets[device] - (largest_after[i] if device == 0 else 0)
            if used + size <= room:
                break
            device, used = device + 1, 0
        devices.append(device)
        if device < num_gpus:
            used += size
    return devices


def _device_map_phases(spec: ModelSpec, workload: Inference, prof: RuntimeProfile, kind: KvCache,
                       assumptions: list[str]) -> tuple[Phase, ...]:
    """device_map="auto" over parallel.pp GPUs capped at max_gpu_memory_bytes each: the phases of the most
    loaded GPU. Offloaded layers stay in host RAM and run on GPU 0 (their KV cache lives there, and one
    layer's weights are staged there while it runs)."""
    par = workload.parallel
    cap = par.max_gpu_memory_bytes or 0
    single = replace(workload, parallel=replace(par, pp=1, device_map=None, max_gpu_memory_bytes=None))
    raw = _torch_phases(spec, single, prof, kind, assumptions)
    names, sizes, layer_of = _module_sizes(spec, single)
    largest_layer = max((size for size, layer in zip(sizes, layer_of, strict=True) if layer >= 0), default=0)
    devices = auto_device_map(sizes, num_gpus=par.pp, cap_bytes=cap,
                              balance_buffer=int(BALANCED_BUFFER * largest_layer))
    kv_layer = _kv_per_layer(spec, single)
    offloaded = [i for i, d in enumerate(devices) if d == par.pp]
    staging = max((sizes[i] for i in offloaded), default=0)

    def load(gpu: int) -> tuple[int, int, int]:
        """(weight bytes, KV share numerator, staging bytes) of one GPU."""
        runs_here = [i for i, d in enumerate(devices) if d == gpu or (gpu == 0 and d == par.pp)]
        weight = sum(sizes[i] for i, d in enumerate(devices) if d == gpu)
        kv = sum(kv_layer[layer_of[i]] for i in runs_here if layer_of[i] >= 0)
        return weight, kv, staging if gpu == 0 else 0

    loads = [load(g) for g in range(par.pp)]
    kv_total = max(sum(kv_layer), 1)
    gpu = max(range(par.pp), key=lambda g: loads[g][0] + loads[g][2] + loads[g][1])
    weight_bytes, kv_share, stage = loads[gpu]
    placed = [Term(name=names[i], nbytes=sizes[i]) for i, d in enumerate(devices) if d == gpu]
    weights_term = Term.group("weights", [*_merge(placed), Term(name="offload_staging", nbytes=stage,
                                                                note="one CPU-offloaded layer's weights")])
    host_bytes = sum(sizes[i] for i in offloaded)
    host = Term.group("host", [Term(name="weights", nbytes=host_bytes)]) if host_bytes else None
    full_weights = max(raw[0].memory.bytes_of("weights"), 1)
    layers_on = [sum(1 for i, d in enumerate(devices) if d == g and layer_of[i] >= 0) for g in range(par.pp)]
    assumptions.append(
        f'device_map="auto" over {par.pp} GPU(s) of at most {cap:,} B: decoder layers per GPU {layers_on}, '
        f"{sum(1 for i in offloaded if layer_of[i] >= 0)} offloaded to CPU RAM ({host_bytes:,} B); showing "
        f"GPU {gpu}; offloaded layers run on GPU 0 (their KV cache and one staged layer there); segment "
        "rounding scaled by this GPU's share of the weights (accelerate's infer_auto_device_map, balanced)")
    out = []
    for phase in raw:
        cache = phase.memory.child("kv_cache")
        frag = phase.memory.child("fragmentation")
        terms = [weights_term]
        if cache is not None:
            terms.append(Term.group("kv_cache", [replace(c, nbytes=c.nbytes * kv_share // kv_total)
                                                 for c in cache.children]))
        if frag is not None:
            terms.append(Term.group("fragmentation", [
                replace(c, nbytes=c.nbytes * weight_bytes // full_weights)
                if c.name == "segment_rounding" else c for c in frag.children]))
        out.append(replace(replace_terms(phase, *terms), host=host))
    return _carry_reserved(tuple(out))


def _module_sizes(spec: ModelSpec, workload: Inference) -> tuple[list[str], list[int], list[int]]:
    """(name, weight bytes, decoder layer index or -1) of the modules device_map places, in load order:
    embeddings (with position embeddings and their norm), each decoder layer, final norm, LM head and the
    rest (buffers, odd parameters)."""
    dtype = compute_dtype(spec, workload)
    groups = weight_tensor_groups(spec, dtype=dtype, quant=workload.quant, runtime=workload.runtime)
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    layer_sizes: list[int] = []
    front = ("embeddings", "position_embeddings", "embedding_norm")
    for tensors, times in groups:
        in_layers = sum(b for path, b in tensors if path.startswith("layers/"))
        if in_layers and spec.checkpoint is not None:   # stored tensors: the layers' bytes split evenly
            per_layer, extra = divmod(in_layers, spec.num_layers)
            layer_sizes.extend([per_layer] * (spec.num_layers - 1) + [per_layer + extra])
        elif in_layers:
            layer_sizes.extend([in_layers] * times)
        for path, nbytes in tensors:
            head = path.split("/")[0]
            if head != "layers":
                target = before if head in front else after
                target[head] = target.get(head, 0) + nbytes * times
    names = ["embeddings", *(["layers"] * len(layer_sizes)), *after]
    sizes = [sum(before.values()), *layer_sizes, *after.values()]
    layer_of = [-1, *range(len(layer_sizes)), *([-1] * len(after))]
    return names, sizes, layer_of


def _kv_per_layer(spec: ModelSpec, workload: Inference) -> list[int]:
    """KV bytes of each decoder layer at the final cache length (the share of the cache each holds)."""
    groups = kv_tensor_groups(spec, workload, tokens=final_cache_tokens(workload))
    return [size for sizes, times in groups for size in [sum(sizes)] * times]


def _merge(terms: list[Term]) -> list[Term]:
    """Terms of the same name summed, first-seen order."""
    totals: dict[str, int] = {}
    for term in terms:
        totals[term.name] = totals.get(term.name, 0) + term.nbytes
    return [Term(name=name, nbytes=nbytes) for name, nbytes in totals.items()]


def _llama_cpp_phases(spec: ModelSpec, workload: Inference, prof: RuntimeProfile) -> tuple[Phase, ...]:
    """llama.cpp: GGUF weights of the offloaded layers, KV pre-allocated to n_ctx, one compute buffer."""
    dtype = compute_dtype(spec, workload)
    all_weights = weights(spec, dtype=dtype, quant=workload.quant, runtime=workload.runtime)
    n_gpu = spec.num_layers if workload.n_gpu_layers is None else min(workload.n_gpu_layers, spec.num_layers)
    layers = all_weights.bytes_of("layers")
    gpu_layers = layers * n_gpu // spec.num_layers
    head_on_gpu = workload.n_gpu_layers is None or workload.n_gpu_layers > spec.num_layers
    head = all_weights.bytes_of("lm_head") + all_weights.bytes_of("final_norm")
    if spec.tie_word_embeddings:
        head = all_weights.bytes_of("embeddings")   # the output matmul reads token_embd
    gpu_weights = Term.group("weights", [Term(name="layers", nbytes=gpu_layers),
                                         Term(name="lm_head", nbytes=head if head_on_gpu else 0)])
    n_ctx = workload.max_cache_tokens or workload.total_tokens
    cache = kv_cache_at(spec, workload, tokens=n_ctx, after_decode=False)
    ubatch = min(prof.compute_ubatch_tokens or 512, workload.prompt_tokens)
    mlp = spec.layers[0].mlp
    inter = mlp.expert.intermediate_size * mlp.top_k if isinstance(mlp, MoeSpec) else mlp.intermediate_size
    # ggml graph allocator: fp32 intermediates of one layer for a ubatch, and fp32 logits of the outputs
    compute = Term.group("activations", [
        Term(name="compute_buffer",
             nbytes=workload.batch_size * ubatch * (3 * inter + 4 * spec.hidden_size) * 4),
    ])
    out_logits = Term.group("logits", [Term(name="output", nbytes=workload.batch_size * spec.vocab_size * 4)])
    host_full = kv_cache_at(spec, replace(workload, n_gpu_layers=None), tokens=n_ctx, after_decode=False)
    host = Term.group("host", [
        Term(name="embeddings", nbytes=all_weights.bytes_of("embeddings")),   # token_embd stays in RAM
        Term(name="layers", nbytes=layers - gpu_layers),
        Term(name="lm_head", nbytes=0 if head_on_gpu else head),
        Term(name="kv_cache", nbytes=host_full.nbytes - cache.nbytes),
    ])
    non_torch = Term.group("non_torch", [Term(name="cuda_context", nbytes=LLAMA_CPP_CONTEXT_BYTES)])
    load = Phase(name=PhaseName.LOAD, memory=memory([gpu_weights, cache, non_torch]), host=host)
    work = [gpu_weights, cache, compute, out_logits, non_torch]
    phases = [load, Phase(name=PhaseName.PREFILL, memory=memory(work), host=host, at="compute buffer")]
    if workload.new_tokens > 1:
        phases.append(Phase(name=PhaseName.DECODE, memory=memory(work), host=host, at="compute buffer"))
    return tuple(phases)


def vllm_kv_capacity_tokens(spec: ModelSpec, workload: Inference, *, gpu_usable_bytes: int) -> int:
    """Tokens of KV cache vLLM can hold: gpu_memory_utilization × usable − (weights + profiled activations
    + non-torch), divided by the bytes per token, rounded down to whole blocks (see `kv_capacity`)."""
    phases, _ = inference_phases(spec, workload)
    return kv_capacity(spec, workload, phases, gpu_usable_bytes=gpu_usable_bytes).tokens
