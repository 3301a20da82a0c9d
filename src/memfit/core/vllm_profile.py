"""vLLM V1's start-up memory profile: what it counts before it sizes the KV cache (vLLM 0.11-0.20).

vLLM's worker takes `requested = ceil(total × gpu_memory_utilization)` (total: cudaMemGetInfo's, the
catalog's `usable_bytes`) and gives the KV cache `requested − non_kv`, where
`non_kv = weights + torch peak increase of the profile run + non-torch increase since start-up` (plus, from
0.20, its CUDA-graph estimate). Source: vllm v1/worker/gpu_worker.py determine_available_memory,
utils/mem_utils.py memory_profiling (0.11.2, 0.18.0, 0.20.0).

The profile run (v1/worker/gpu_model_runner.py profile_run) is one forward of `max_num_batched_tokens`
tokens split over `min(tokens, max_num_seqs)` dummy requests (`_dummy_run`), then the sampler on one row
per request (`_dummy_sampler_run`, the forward's hidden states still held). The torch peak is the larger of
the two. Everything here is per GPU (tensor-parallel rank) and integer bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from memfit.core.dtypes import DType
from memfit.core.errors import InvalidWorkload
from memfit.core.overhead import LAZY_KERNEL_BYTES
from memfit.core.parallel import NCCL_BUFFSIZE_BYTES, NCCL_CHANNELS, NCCL_RING_PEERS
from memfit.core.result import Gpu, Term
from memfit.core.spec import AttentionSpec, MlpSpec, ModelSpec, MoeSpec, attention_of, mlp_of
from memfit.core.units import GiB, MiB
from memfit.core.workload import Inference

Version = tuple[int, int, int]

OLDEST_MODELED: Version = (0, 11, 0)
NEWEST_MODELED: Version = (0, 20, 0)
"""The vLLM releases whose memory profiling this module follows (read: 0.11.2, 0.14.0, 0.16.0, 0.17.0,
0.18.0, 0.19.0, 0.20.0). Without `vllm_version` the newest is modelled."""

TRITON_TOPK_SINCE: Version = (0, 17, 0)
"""First release whose sampler masks top-k/top-p in place with a Triton kernel (apply_top_k_top_p_triton
for ≥ 8 rows) instead of sorting the logits. Source: vllm 0.17.0 v1/sample/ops/topk_topp_triton.py (absent
in 0.16.0)."""

CUDAGRAPH_ESTIMATE_SINCE: Version = (0, 20, 0)
"""First release that subtracts its CUDA-graph memory estimate from the KV budget by default
(VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS defaults to 1). 0.18 and 0.19 profile it but apply it only on
opt-in; 0.11-0.17 capture graphs after the KV cache is allocated. Source: vllm envs.py in 0.18.0, 0.19.0
("0"), 0.20.0 ("1"); v1/worker/gpu_worker.py determine_available_memory."""

LARGE_GPU_BYTES = 70 * GiB
"""GPUs with at least this much memory (and not an A100) get the larger batch defaults.
Source: vllm engine/arg_utils.py EngineArgs.get_batch_defaults (0.11.2-0.20.0)."""
SERVE_MAX_BATCHED_TOKENS = (8192, 2048)
SERVE_MAX_NUM_SEQS = (1024, 256)
"""`vllm serve` (UsageContext.OPENAI_API_SERVER) defaults on a large GPU and otherwise.
Source: vllm engine/arg_utils.py get_batch_defaults."""

FUSED_MOE_CHUNK_TOKENS = 32768
"""Tokens per fused-MoE chunk: the intermediate caches are sized for min(tokens, this).
Source: vllm envs.py VLLM_FUSED_MOE_CHUNK_SIZE default "32768" (0.11.2-0.20.0)."""

VOCAB_PADDING = 64
"""The LM head's rows are padded to a multiple of this. Source: vllm model_executor/layers/
vocab_parallel_embedding.py DEFAULT_VOCAB_PADDING_SIZE."""

SORT_SEGMENTED_MIN_ROWS = 128
"""torch's CUDA sort takes cub's segmented sort from this many rows, a full sort with (index, segment)
pairs below it. Source: pytorch aten/src/ATen/native/cuda/Sort.cu launch_stable_sort_kernel."""

TRITON_TOPK_PROGRAMS = 132
"""Rows of the Triton top-k/top-p kernel's cached fp32 scratch buffer: one per streaming multiprocessor, at
most the batch (H100 / H200: 132 SMs). Source: vllm 0.17+ topk_topp_triton.apply_top_k_top_p_triton
(_TRITON_BUFFER_CACHE, size min(next_power_of_2(programs), num_sm))."""

CUDAGRAPH_MAX_CAPTURE = 512
"""Largest CUDA-graph batch by default: min(2 × max_num_seqs, 512, max_num_batched_tokens).
Source: vllm config/vllm.py _set_cudagraph_sizes (0.11.2-0.20.0)."""
CUDAGRAPH_MIN_PER_GRAPH_BYTES = 1 * MiB
"""vLLM's floor on each further graph's memory in its estimate. Source: vllm 0.18+ gpu_model_runner.py
profile_cudagraph_memory (`max(mem_samples[1], 1 << 20)`)."""

MLA_BLOCK_SIZE = 64
"""MLA caches on CUDA use FlashMLA, which needs blocks of a multiple of 64 tokens: vLLM forces 64 (Blackwell's
CUTLASS MLA forces 128; not modelled). Source: vllm platforms/cuda.py CudaPlatform.check_and_update_config
("Forcing kv cache block size to 64 for FlashMLA backend")."""

_VERSION_RE = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_vllm_version(text: str) -> Version:
    """(major, minor, patch) from "0.11.2", "v0.18.0" or "0.20"; else InvalidWorkload naming the field."""
    match = _VERSION_RE.match(text)
    if match is None:
        raise InvalidWorkload(f"vllm_version={text!r} is not a version; use e.g. 0.11.2 or 0.20.0")
    return int(match[1]), int(match[2]), int(match[3] or 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class VllmSettings:
    """The engine arguments that size vLLM's memory, with vLLM's defaults filled in."""

    version: Version
    max_num_batched_tokens: int
    max_num_seqs: int
    max_model_len: int
    block_size: int
    enforce_eager: bool
    utilization: Fraction
    kv_cache_memory_bytes: int | None
    rocm: bool

    @property
    def in_modeled_range(self) -> bool:
        return OLDEST_MODELED <= self.version <= NEWEST_MODELED

    @property
    def applies_cudagraph_estimate(self) -> bool:
        """Whether the KV budget loses vLLM's CUDA-graph estimate (0.20+, CUDA, graphs on)."""
        return self.version >= CUDAGRAPH_ESTIMATE_SINCE and not self.enforce_eager and not self.rocm


def vllm_settings(workload: Inference, gpu: Gpu | None, *, default_utilization: Fraction,
                  mla: bool = False) -> VllmSettings:
    """The workload's vLLM arguments, vLLM's `vllm serve` defaults for the GPU where not given.

    Without a GPU the large-GPU defaults apply (an assumption line says so). An MLA model's block size is
    raised to MLA_BLOCK_SIZE when it is not a multiple of it.
    Source: vllm engine/arg_utils.py get_batch_defaults (device memory ≥ 70 GiB and not an A100).
    """
    large = gpu is None or (gpu.usable_bytes >= LARGE_GPU_BYTES and "a100" not in gpu.name.lower())
    index = 0 if large else 1
    version = parse_vllm_version(workload.vllm_version) if workload.vllm_version else NEWEST_MODELED
    return VllmSettings(
        version=version,
        max_num_batched_tokens=workload.max_num_batched_tokens or SERVE_MAX_BATCHED_TOKENS[index],
        max_num_seqs=workload.max_num_seqs or SERVE_MAX_NUM_SEQS[index],
        max_model_len=workload.total_tokens,
        block_size=MLA_BLOCK_SIZE if mla and workload.block_size % MLA_BLOCK_SIZE else workload.block_size,
        enforce_eager=workload.enforce_eager,
        utilization=workload.gpu_memory_utilization or default_utilization,
        kv_cache_memory_bytes=workload.kv_cache_memory,
        rocm=gpu is not None and gpu.vendor == "amd",
    )


# --- the profile forward ------------------------------------------------------------------------------


def _attention_block(att: AttentionSpec, *, tokens: int, hidden: int, tp: int) -> int:
    """Elements alive at the attention block's peak (tp-local): the fused qkv output beside the attention
    output, or the attention output beside o_proj's output and its out-of-place all-reduce.
    MLA (prefill path): q, the fused latent projection, kv_b_proj's up-projection, K with the rope part
    and V padded to the qk head size, beside the output.
    Source: vllm model_executor/models/llama.py LlamaAttention.forward; v1/attention/backends/mla/common.py
    MLACommonImpl._forward_prefill (kv_b_proj, cat of k_nope and k_pe, maybe_padded_v)."""
    t = tokens
    heads = max(att.num_heads // tp, 1)
    reduce_out = t * hidden if tp > 1 else 0
    if att.mla is not None:
        mla = att.mla
        qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        q = t * heads * qk
        latent = t * ((mla.q_lora_rank or 0) + mla.kv_lora_rank + mla.qk_rope_head_dim)
        kv_up = t * heads * (mla.qk_nope_head_dim + mla.v_head_dim)
        k = t * heads * qk
        v_padded = t * heads * qk
        out = t * heads * qk
        return max(q + latent + kv_up + k + v_padded + out, out + t * hidden + reduce_out)
    kv_heads = max(att.num_kv_heads // tp, 1)
    qkv = t * (heads + 2 * kv_heads) * att.head_dim
    out = t * heads * att.head_dim
    return max(qkv + out, out + t * hidden + reduce_out)


def mlp_block_bytes(mlp: MlpSpec | MoeSpec, *, tokens: int, hidden: int, tp: int, dtype: DType,
                    fp8_activations: bool, ep: int = 1) -> int:
    """Bytes alive at the MLP's peak on one rank.

    Dense: gate_up output (tokens × 2I/tp) beside silu_and_mul's output, or that beside down_proj's output
    and its all-reduce. MoE (fused_experts, experts split over tp): the router logits, top-k weights and ids
    (fp32 / int32), cache13 = M × top_k × max(N, hidden) and cache2 = M × top_k × N/2 with
    M = min(tokens, VLLM_FUSED_MOE_CHUNK_SIZE) and N = 2 × moe_intermediate / tp, the output, the shared
    experts' output; fp8 experts add the quantized input and intermediate (1 byte each).
    Source: vllm model_executor/layers/fused_moe/fused_moe.py fused_experts_impl (cache13, cache2,
    out_hidden_states, moe_kernel_quantize_input); layers/activation.py SiluAndMul.
    Expert parallel (`ep` > 1): the experts are whole on their rank (N = 2 × moe_intermediate, not / tp) and
    the workspaces keep their M × top_k rows (fused_experts masks the non-local experts through expert_map).
    Source: vllm fused_moe/config.py FusedMoEParallelConfig.make (EP: experts' tp_size = 1).
    """
    t = tokens
    reduce_out = t * hidden if tp > 1 else 0
    if isinstance(mlp, MlpSpec):
        inter = -(-mlp.intermediate_size // tp)
        up = t * inter * (2 if mlp.gated else 1)
        act = t * inter
        return dtype.nbytes(max(up + act, act + t * hidden + reduce_out))
    e_inter = -(-mlp.expert.intermediate_size // (1 if ep > 1 else tp))
    n = e_inter * (2 if mlp.expert.gated else 1)
    m = min(t, FUSED_MOE_CHUNK_TOKENS)
    k = mlp.top_k
    cache13 = m * k * max(n, hidden)
    cache2 = m * k * (n // 2 if mlp.expert.gated else n)
    shared = 0
    if mlp.shared_expert is not None:
        shared = t * hidden
    elements = t * mlp.num_experts + cache13 + cache2 + t * hidden + shared + reduce_out
    routing = t * k * (4 + 4 + 4)   # topk_weights fp32, topk_ids and token_expert_indices int32
    quantized = m * hidden + m * k * (n // 2) if fp8_activations else 0
    shared_work = 0
    if mlp.shared_expert is not None:
        s_inter = -(-mlp.shared_expert.intermediate_size // tp)
        shared_work = dtype.nbytes(t * s_inter * 3 + t * hidden)   # its gate_up, act and output
    return max(dtype.nbytes(elements) + routing + quantized, shared_work)


def forward_peak(spec: ModelSpec, *, tokens: int, tp: int, dtype: DType, fp8_activations: bool,
                 ep: int = 1) -> Term:
    """The profile forward's peak on one rank: the residual stream (residual and normed hidden states,
    tokens × hidden each) plus the largest block working set over the layers.
    Source: vllm model_executor/models/llama.py LlamaDecoderLayer.forward (fused_add_rms_norm keeps
    `residual` beside `hidden_states`); see `mlp_block_bytes` and `_attention_block`."""
    h = spec.hidden_size
    stream = dtype.nbytes(2 * tokens * h)
    best_attn = 0
    best_mlp = 0
    seen: set[tuple[int, int]] = set()
    for layer in spec.layers:
        key = (id(layer.attention), id(layer.mlp))
        if key in seen:
            continue
        seen.add(key)
        attention = _attention_block(attention_of(layer), tokens=tokens, hidden=h, tp=tp)
        best_attn = max(best_attn, dtype.nbytes(attention))
        best_mlp = max(best_mlp, mlp_block_bytes(mlp_of(layer), tokens=tokens, hidden=h, tp=tp, dtype=dtype,
                                                 fp8_activations=fp8_activations, ep=ep))
    block = max(best_attn, best_mlp)
    where = "MLP / experts" if best_mlp >= best_attn else "attention"
    return Term.group("profile_forward", [
        Term(name="residual_stream", nbytes=stream, note=f"{tokens:,} tokens × hidden × 2"),
        Term(name="block_working_set", nbytes=block, note=f"largest layer block: {where}"),
    ], note=f"vLLM profile forward of max_num_batched_tokens={tokens:,} tokens")


# --- the sampler dummy run ----------------------------------------------------------------------------


def sampler_bytes_per_logit(version: Version, *, rows: int, logits_dtype: DType) -> list[tuple[str, int]]:
    """(name, bytes per logit element) alive at the dummy sampler's peak, for `rows` sampled rows.

    Always: the model's logits (compute dtype, all-gathered to the full vocabulary on every rank) and the
    sampler's fp32 copy. Before 0.17 top-p sorts the fp32 logits: the sorted values (fp32) and indices
    (int64), and torch's CUDA sort temporaries — from 128 rows cub's segmented sort with an int64 index
    seed and its double buffers (keys fp32 + values int64); below 128 rows two (index, segment) int2
    buffers and a radix sort's double buffers. From 0.17 a Triton kernel masks in place; the peak is the
    softmax probabilities and the exponential noise `q` (fp32 each).
    Source: vllm v1/sample/sampler.py Sampler.forward (logits.to(float32)); ops/topk_topp_sampler.py
    apply_top_k_top_p / random_sample; pytorch aten/src/ATen/native/cuda/Sort.cu segmented_sort_pairs,
    segmented_sort_pairs_by_full_sort; cub DeviceSegmentedRadixSort::SortPairs (non-DoubleBuffer API).
    """
    parts = [("logits", logits_dtype.nbytes(1)), ("logits_fp32", 4)]
    if version >= TRITON_TOPK_SINCE and rows >= 8:
        return [*parts, ("probs_fp32", 4), ("exponential_q_fp32", 4)]
    parts += [("sorted_values_fp32", 4), ("sorted_indices_int64", 8)]
    if rows >= SORT_SEGMENTED_MIN_ROWS:
        return [*parts, ("sort_index_seed_int64", 8), ("cub_double_buffers", 4 + 8)]
    if rows > 1:
        return [*parts, ("sort_index_segment_pairs", 8 + 8), ("cub_double_buffers", 4 + 8)]
    return [*parts, ("cub_double_buffers", 4 + 8)]


def sampler_peak(spec: ModelSpec, settings: VllmSettings, *, dtype: DType) -> Term:
    """The dummy sampler run at its peak: `min(max_num_batched_tokens, max_num_seqs)` rows of logits over
    the padded vocabulary, with the profile forward's hidden states (tokens × hidden) still held.
    Source: vllm v1/worker/gpu_model_runner.py profile_run (`hidden_states` is deleted only after
    `_dummy_sampler_run`) and _dummy_run (num_reqs = min(num_tokens, max_num_seqs))."""
    rows = min(settings.max_num_batched_tokens, settings.max_num_seqs)
    vocab = -(-spec.vocab_size // VOCAB_PADDING) * VOCAB_PADDING
    elements = rows * vocab
    kids = [Term(name=name, nbytes=elements * per) for name, per in
            sampler_bytes_per_logit(settings.version, rows=rows, logits_dtype=dtype)]
    if settings.version >= TRITON_TOPK_SINCE and rows >= 8:
        kids.append(Term(name="triton_topk_buffer",
                         nbytes=min(rows, TRITON_TOPK_PROGRAMS) * spec.vocab_size * 4))
    held = dtype.nbytes(settings.max_num_batched_tokens * spec.hidden_size)
    kids.append(Term(name="forward_hidden_states", nbytes=held))
    return Term.group("sampler", kids, note=f"{rows:,} rows × {vocab:,} vocabulary")


# --- outside the torch allocator ----------------------------------------------------------------------


def non_torch_increase(workload: Inference) -> Term:
    """Device memory outside torch that appears between vLLM's start-up snapshot (taken after CUDA and the
    distributed groups are initialised, so the CUDA context is not counted) and the end of the profile run:
    kernel images loaded lazily by the first forward, and with tp > 1 the NCCL buffers of the
    tensor-parallel communicator (NCCL connects each algorithm lazily, at the first large all-reduce).
    Source: vllm utils/mem_utils.py memory_profiling (non_torch_increase from the baseline snapshot);
    memfit overhead.LAZY_KERNEL_BYTES; parallel.NCCL_* (NCCL_BUFFSIZE × channels × ring peers)."""
    kids = [Term(name="kernels", nbytes=LAZY_KERNEL_BYTES)]
    if workload.parallel.tp > 1:
        kids.append(Term(name="nccl", nbytes=NCCL_CHANNELS * NCCL_RING_PEERS * NCCL_BUFFSIZE_BYTES))
    return Term.group("non_torch", kids)


def cudagraph_estimate(spec: ModelSpec, settings: VllmSettings, *, tp: int, dtype: DType) -> Term:
    """vLLM 0.20's CUDA-graph memory estimate (subtracted from the KV budget), approximated: the first
    (largest) capture keeps, per decoder layer, the piecewise graphs' boundary tensors at the largest
    capture size (hidden states, the qkv output and the attention output, tp-local); each further graph
    of the PIECEWISE and FULL sets adds vLLM's 1 MiB floor.
    Source: vllm 0.20 v1/worker/gpu_model_runner.py profile_cudagraph_memory (first capture + per-graph ×
    (n − 1) per mode), config/vllm.py capture sizes [1, 2, 4] + range(8, 256, 8) + range(256, max + 1, 16)."""
    largest = min(2 * settings.max_num_seqs, CUDAGRAPH_MAX_CAPTURE, settings.max_num_batched_tokens)
    sizes = [s for s in [1, 2, 4, *range(8, 256, 8), *range(256, largest + 1, 16)] if s <= largest]
    full_sizes = [s for s in sizes if s <= settings.max_num_seqs]
    per_layer = 0
    for layer in spec.layers:
        att = attention_of(layer)
        heads = max(att.num_heads // tp, 1)
        if att.mla is not None:
            width = heads * (att.mla.qk_nope_head_dim + att.mla.qk_rope_head_dim) * 2
        else:
            width = (heads + 2 * max(att.num_kv_heads // tp, 1)) * att.head_dim + heads * att.head_dim
        per_layer += dtype.nbytes(largest * (spec.hidden_size + width))
    further = (len(sizes) - 1 + max(len(full_sizes) - 1, 0)) * CUDAGRAPH_MIN_PER_GRAPH_BYTES
    return Term.group("cuda_graphs", [
        Term(name="first_capture", nbytes=per_layer,
             note=f"{largest} tokens, every layer's boundary tensors"),
        Term(name="further_graphs", nbytes=further,
             note=f"{len(sizes)} piecewise + {len(full_sizes)} full graphs, 1 MiB each after the first"),
    ])
