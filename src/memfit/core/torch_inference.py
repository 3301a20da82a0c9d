"""Inference phases under PyTorch's caching allocator (transformers, and vLLM's weights and profiling run).

`torch_phases` builds load, prefill and decode at their peaks: weights, the KV cache the layers before the
peak layer hold, the peak layer's working set or the LM head moment, cuBLAS workspace and dequantisation
buffers; reserved and device bytes from overhead.reserved_and_device_terms with the exact segment rounding
of weight and cache tensors. `carry_reserved` keeps reserved bytes from shrinking phase to phase.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from memfit.core.choices import KvCache, PhaseName
from memfit.core.dtypes import DType
from memfit.core.errors import InvalidWorkload
from memfit.core.kv_cache import (
    compute_dtype,
    final_cache_tokens,
    kv_cache_at,
    kv_layer_bytes,
    kv_tensor_groups,
)
from memfit.core.logits import logits
from memfit.core.optimizers import decoder_linears
from memfit.core.overhead import (
    FREED_POOL_SLACK,
    POOL_SLACK,
    Repeated,
    cublas_workspace_bytes,
    reserved_and_device_terms,
    round_block,
    segment_waste_repeated,
)
from memfit.core.result import Gpu, Phase, Term, memory, replace_terms
from memfit.core.runtimes import PROFILES, RuntimeProfile
from memfit.core.spec import ModelSpec
from memfit.core.transients import (
    INT8_OUTLIER_BYTES_PER_WEIGHT,
    Step,
    decode_step,
    input_bytes,
    layer_peak,
    layer_working_sets,
    prefill_step,
)
from memfit.core.vision_tower import VisionLoad
from memfit.core.weights import (
    tensor_bytes,
    unconverted_experts_note,
    weight_tensor_groups,
    weights_tree_groups,
    with_formats,
)
from memfit.core.workload import Inference

RANDOM_INIT_TIED_HEAD = True
"""Model the reserved bytes of a random-weight build (`from_config`, as memfit measure and the groundtruth
do): a tied LM head is allocated once before tying, and its freed block stays cached.
Source: groundtruth Llama-3.2-1B rows: load peak_alloc − end_alloc = 526,385,152 B (vocab × hidden × 2)."""

def _gpu_weights(spec: ModelSpec, workload: Inference) -> tuple[Term, list[Repeated]]:
    """Weights on the most loaded GPU and their tensor sizes (runs of equal layers grouped): each tensor as
    a tensor-parallel rank holds it (weight_tensor_groups), ceil(layers/pp) layers."""
    dtype = compute_dtype(spec, workload)
    tp, pp = workload.parallel.tp, workload.parallel.pp
    groups = weight_tensor_groups(spec, dtype=dtype, quant=workload.quant, runtime=workload.runtime, tp=tp,
                                  ep=workload.parallel.ep)
    absorbed = mla_absorbed_bytes(spec, workload, dtype=dtype)
    if absorbed:
        groups = [*groups, ([("mla_absorbed", absorbed)], 1)]
    term = with_formats(weights_tree_groups(groups), quant=workload.quant, dtype=dtype, spec=spec)
    if pp == 1:
        return term, [(tuple(b for _, b in tensors), times) for tensors, times in groups]
    layer_share = -(-spec.num_layers // pp)
    scaled = _scale_term(term, layer_fraction=(layer_share, spec.num_layers), pp=pp)
    sizes = [b for tensors, times in groups for _ in range(times) for _, b in tensors]
    # segment rounding of this stage's share of the tensors
    return scaled, [(tuple(sizes[: max(1, len(sizes) * layer_share // spec.num_layers)]), 1)]

def mla_absorbed_bytes(spec: ModelSpec, workload: Inference, *, dtype: DType) -> int:
    """The compute-dtype copy of every MLA layer's kv_b_proj a runtime keeps to absorb it into the query
    and output (W_UK_T and W_UV, views of one dequantized tensor), tp-local.
    Source: vLLM v1/attention/backends/mla/common.py MLACommonImpl.process_weights_after_loading
    (get_and_maybe_dequant_weights(kv_b_proj) in the activation dtype)."""
    if not PROFILES[workload.runtime].mla_absorbed_copy:
        return 0
    total = 0
    for layer in spec.layers:
        mla = layer.attention.mla if layer.attention is not None else None
        if layer.attention is not None and mla is not None:
            weights = layer.attention.num_heads * (mla.qk_nope_head_dim + mla.v_head_dim) * mla.kv_lora_rank
            total += tensor_bytes(dtype, -(-weights // workload.parallel.tp))
    return total


def _scale_term(term: Term, *, layer_fraction: tuple[int, int], pp: int) -> Term:
    """Weights of the most loaded pipeline stage (already tp-local): layers cut to this stage's share,
    plus the larger of the embeddings and the LM head. No uneven device_map budgets."""
    def scale(t: Term, in_layers: bool) -> Term:
        if t.children:
            return Term.group(t.name, [scale(c, in_layers or t.name == "layers") for c in t.children])
        nbytes = t.nbytes
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

def _overhead(workload: Inference, dequant: int, gpu: Gpu | None) -> Term:
    return Term.group("runtime_overhead", [
        Term(name="cublas_workspace", nbytes=cublas_workspace_bytes(gpu=gpu)),
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
    gpu: Gpu | None = None  # its BLAS workspace (None: an H100)
    sdpa_gpu: Gpu | None = None  # whose SDPA backends apply: the GPU under torch SDPA (transformers); None
                                 # (an H100's flash-style kernels) for runtimes with their own (vLLM)
    vision: VisionLoad | None = None   # the images' tower moment and what the decoder keeps of them

def torch_phases(spec: ModelSpec, workload: Inference, prof: RuntimeProfile, kind: KvCache,
                  assumptions: list[str], gpu: Gpu | None = None, *,
                  vision: VisionLoad | None = None) -> tuple[Phase, ...]:
    """The torch-allocator phases, each at its own peak (callers apply `carry_reserved`); `gpu` (None: an
    H100) decides the SDPA backend and the cuBLAS workspace. `workload` is the decoder's (image tokens
    already in its prompt); `vision` adds the images' tower and inputs."""
    _refuse_static_chunked(spec, workload, kind)
    weights_term, weight_sizes = _gpu_weights(spec, workload)
    floor = _init_floor(spec, workload, weights_term)
    if floor:
        assumptions.append("reserved includes the tied LM head that from_config allocates before tying "
                           "(random-weight build); a from_pretrained load does not have it")
    if workload.quant.kind == "bnb-int8":
        assumptions.append(int8_bound_note(spec))
    experts = unconverted_experts_note(spec, workload.quant, kept=str(compute_dtype(spec, workload)))
    if experts:
        assumptions.append(experts)
    final_tokens = final_cache_tokens(workload)
    cache_tokens = workload.prompt_tokens
    if kind is KvCache.STATIC:
        cache_tokens = workload.max_cache_tokens or final_tokens
    if kind is KvCache.PAGED:
        cache_tokens = final_tokens
    inputs = Term(name="inputs", nbytes=input_bytes(workload, generating=workload.new_tokens > 0))
    if vision is not None:
        inputs = Term.group("inputs", [replace(inputs, name="token_ids"), vision.pixel_values])
    job = _Job(spec=spec, workload=workload, prof=prof, kind=kind, weights=weights_term,
               weight_waste=_persistent_waste(weight_sizes), floor=floor, inputs=inputs,
               cache_tokens=cache_tokens, final_tokens=final_tokens, gpu=gpu,
               sdpa_gpu=gpu if prof.torch_sdpa else None, vision=vision)
    load = _phase(PhaseName.LOAD, [weights_term], workload, waste=job.weight_waste, floor=floor,
                  at="weights loaded")
    prefill = _prefill_phase(job, assumptions)
    if workload.new_tokens < 2:   # the first new token comes from the prefill's logits
        return (load, prefill)
    if kind is KvCache.STATIC and prof.auto_compile_static_cache:
        assumptions.append("generate() compiles decode with CUDA graphs for a static cache (not sized)")
    return (load, prefill, _decode_phase(job))

def _refuse_static_chunked(spec: ModelSpec, workload: Inference, kind: KvCache) -> None:
    """generate() with a static cache builds its masks with create_masks_for_generate, which passes
    block_sequence_ids to create_chunked_causal_mask, whose signature lacks it: a TypeError on every model
    with chunked attention (Llama 4). Source: transformers 5.17 generation/utils.py (step 4 of the inputs)
    and masking_utils.create_chunked_causal_mask; the trace fails alike."""
    if kind is KvCache.STATIC and workload.new_tokens and any(att.chunked for att in spec.attention_specs):
        raise InvalidWorkload(f"kv_cache=static fails in transformers 5.17 generate() on {spec.name}'s "
                              "chunked attention (create_chunked_causal_mask takes no block_sequence_ids); "
                              "use kv_cache=dynamic")


def int8_bound_note(spec: ModelSpec) -> str:
    """The LLM.int8 assumption and its bound: outliers are value-dependent, so every input column is taken
    as one (the upper bound: random weights flag most); a trained model's few outlier columns lower the
    peak by up to the largest int8 Linear's side path (its weight sliced, dequantised and cast)."""
    largest = max((lin.num_weights for _, lin in decoder_linears(spec)
                   if lin.is_module and lin.bnb_quantizable), default=0)
    side = INT8_OUTLIER_BYTES_PER_WEIGHT * largest
    return (f"LLM.int8 (threshold 6.0): every input column taken as an outlier, the upper bound; with a "
            f"trained model's few outlier columns the peak can be up to {side / 2**30:.2f} GiB ({side:,} B) "
            "lower (the largest int8 Linear's dequantised side path)")


def _prefill_phase(job: _Job, assumptions: list[str]) -> Phase:
    """The prefill at its peak: the last layer with the whole prompt cached, or the LM head moment."""
    spec, workload = job.spec, job.workload
    cache = kv_cache_at(spec, workload, tokens=job.cache_tokens, after_decode=False)
    waste = job.weight_waste + _persistent_waste(kv_tensor_groups(spec, workload, tokens=job.cache_tokens))
    acts, dequant = _prefill_layer_peak(spec, workload, job.prof, kind=job.kind,
                                        cache_tokens=job.cache_tokens, assumptions=assumptions,
                                        gpu=job.sdpa_gpu)
    layer_cache = cache
    if job.prof.max_batched_tokens is None:
        found = _prefill_peak_layer(spec, workload, kind=job.kind, cache_tokens=job.cache_tokens,
                                    gpu=job.sdpa_gpu)
        if found is not None:
            acts, dequant, layer_cache = found
    kept = [job.vision.features] if job.vision else []
    layer_terms = [job.weights, layer_cache, Term.group("activations", [*acts.children, *kept, job.inputs]),
                   _overhead(workload, dequant, job.gpu)]
    generating = workload.new_tokens > 0
    positions = 1 if generating or job.prof.max_batched_tokens else workload.prompt_tokens
    dt = compute_dtype(spec, workload)
    final_hidden = Term(name="final_hidden",
                        nbytes=workload.batch_size * dt.nbytes(positions * spec.hidden_size))
    head_terms = [job.weights, cache, Term.group("activations", [final_hidden, *kept, job.inputs]),
                  logits(spec, workload, positions=positions), _overhead(workload, 0, job.gpu)]
    layer_total, head_total = sum(t.nbytes for t in layer_terms), sum(t.nbytes for t in head_terms)
    if job.vision is not None:
        # the tower runs before the first decoder layer: no KV cache yet
        tower_terms = [job.weights, Term.group("activations", [job.vision.tower, job.inputs]),
                       _overhead(workload, 0, job.gpu)]
        if sum(t.nbytes for t in tower_terms) > max(layer_total, head_total):
            return _phase(PhaseName.PREFILL, tower_terms, workload, waste=job.weight_waste, floor=job.floor,
                          at="vision tower")
    if layer_total >= head_total:
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
    step = decode_step(workload, kind=job.kind, cache_tokens=cache_len, gpu=job.sdpa_gpu)
    acts, dequant = layer_peak(spec, workload, step)
    if spec.has_mamba:
        acts, dequant, growth = _hybrid_decode_peak(spec, workload, step, growth=growth if cat_growth else 0)
    layer_terms = [job.weights, final_cache,
                   Term.group("activations", [*acts.children, job.inputs,
                                              Term(name="kv_cat_copy", nbytes=growth)]),
                   _overhead(workload, dequant, job.gpu)]
    dt = compute_dtype(spec, workload)
    final_hidden = Term(name="final_hidden", nbytes=workload.batch_size * dt.nbytes(spec.hidden_size))
    head_terms = [job.weights, final_cache, Term.group("activations", [final_hidden, job.inputs]),
                  logits(spec, workload, positions=1), _overhead(workload, 0, job.gpu)]
    at_layer = sum(t.nbytes for t in layer_terms) >= sum(t.nbytes for t in head_terms)
    return _phase(PhaseName.DECODE, layer_terms if at_layer else head_terms, workload, waste=waste,
                  floor=job.floor, at="last decode step, " + ("last layer" if at_layer else "LM head"))

def _hybrid_decode_peak(spec: ModelSpec, workload: Inference, step: Step, *,
                        growth: int) -> tuple[Term, int, int]:
    """(activations, dequantisation bytes, cat copy) of the decode step's largest layer in a model with Mamba
    layers: only an attention layer grows its K/V with torch.cat (its largest K or V tensor, `growth` is
    recomputed over attention layers), a Mamba layer updates its fixed-size state in place."""
    cat_copy = 0
    if growth:
        attention_only = tuple(layer for layer in spec.layers if layer.attention is not None)
        widths = kv_tensor_groups(replace(spec, layers=attention_only), workload,
                                  tokens=step.kv_tokens) if attention_only else []
        cat_copy = max((max(sizes) for sizes, _ in widths), default=0)
    sets = layer_working_sets(spec, workload, step)
    best = max(spec.layers, key=lambda layer: sets[id(layer)][0].nbytes + sets[id(layer)][1]
               + (cat_copy if layer.attention is not None else 0))
    acts, dequant = sets[id(best)]
    return acts, dequant, cat_copy if best.attention is not None else 0


def _init_floor(spec: ModelSpec, workload: Inference, weights_term: Term) -> int:
    """The cached block of a tied LM head allocated before tying (random-weight builds; see
    RANDOM_INIT_TIED_HEAD), 0 otherwise."""
    if RANDOM_INIT_TIED_HEAD and spec.tie_word_embeddings and not workload.quant.is_quantized:
        return round_block(weights_term.bytes_of("embeddings"))
    return 0

def _prefill_peak_layer(spec: ModelSpec, workload: Inference, *, kind: KvCache, cache_tokens: int,
                        gpu: Gpu | None = None) -> tuple[Term, int, Term] | None:
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
                                                           cache_tokens=cache_tokens, gpu=gpu))
    held: dict[str, int] = {}
    best: tuple[int, Term, int, dict[str, int]] | None = None
    for layer, tensors in zip(spec.layers, per_layer, strict=True):
        for name, nbytes in tensors:
            held[name] = held.get(name, 0) + nbytes
        acts, dequant = sets[id(layer)]
        total = acts.nbytes + dequant + sum(held.values())
        if best is None or total >= best[0]:
            best = (total, acts, dequant, dict(held))
    assert best is not None  # spec.layers is never empty
    cache = Term.group("kv_cache", [Term(name=n, nbytes=b) for n, b in best[3].items()])
    return best[1], best[2], cache

def _prefill_layer_peak(spec: ModelSpec, workload: Inference, prof: RuntimeProfile, *, kind: KvCache,
                        cache_tokens: int, assumptions: list[str],
                        gpu: Gpu | None = None) -> tuple[Term, int]:
    """The prefill's largest layer working set; for a profiling runtime (vLLM), its profile run's.

    vLLM sizes activations with one dummy forward of max_num_batched_tokens tokens and keeps that memory;
    logits are computed for sampled positions only. Source: vLLM gpu_worker.determine_available_memory.
    """
    if prof.max_batched_tokens is None:
        return layer_peak(spec, workload, prefill_step(spec, workload, kind=kind, cache_tokens=cache_tokens,
                                                       gpu=gpu))
    tokens = prof.max_batched_tokens
    # the vLLM prefill is replaced by core/vllm.py's profile run; this one only seeds the decode phase
    profile_run = replace(workload, batch_size=1, prompt_tokens=tokens, new_tokens=0, max_cache_tokens=None)
    return layer_peak(spec, profile_run, Step(query_tokens=tokens, kv_tokens=tokens, masked=False, gpu=gpu))

def carry_reserved(phases: tuple[Phase, ...]) -> tuple[Phase, ...]:
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
