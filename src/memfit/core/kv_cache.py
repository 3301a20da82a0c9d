"""KV cache bytes: MHA/GQA/MQA, MLA, sliding-window layers; dynamic, static and paged caches; cache dtypes.

`kv_cache(spec, workload)` is the cache at the end of the job (its largest size). `kv_cache_at(spec,
workload, tokens=)` is the cache holding `tokens` per sequence, for phase peaks. Children are named by
attention kind: `full_attention`, `sliding`, `mla_latent` (one latent tensor per layer: vLLM, llama.cpp)
and `mla` (transformers' two latent tensors per layer). A Mamba mixer layer keeps a fixed-size recurrent
state instead, which does not grow with the context: `conv_state` and `ssm_state` (see mamba_state_bytes).
Layers with neither (Nemotron-H's MLP and MoE blocks) cache nothing.
"""

from __future__ import annotations

from memfit.core.choices import KvCache
from memfit.core.dtypes import DType
from memfit.core.errors import InvalidWorkload
from memfit.core.result import Term
from memfit.core.runtimes import RuntimeProfile, profile
from memfit.core.spec import AttentionSpec, LayerSpec, MixerSpec, ModelSpec, attention_of
from memfit.core.weights import tensor_bytes
from memfit.core.workload import Inference


def compute_dtype(spec: ModelSpec, workload: Inference) -> DType:
    """The dtype activations run in: the workload's, else the checkpoint's (bnb computes in it too)."""
    return workload.dtype or spec.checkpoint_dtype


def cache_dtypes(spec: ModelSpec, workload: Inference) -> tuple[DType, DType]:
    """(K dtype, V dtype): the requested cache dtype (llama.cpp: K and V apart), else the compute dtype."""
    k = workload.kv_cache_dtype or compute_dtype(spec, workload)
    v = workload.v_cache_dtype or k
    return k, v


def effective_kv_cache(workload: Inference, prof: RuntimeProfile) -> KvCache:
    """The cache kind used: the workload's when the runtime offers it; the runtime default for 'dynamic'."""
    if workload.kv_cache in prof.kv_caches:
        return workload.kv_cache
    if workload.kv_cache is KvCache.DYNAMIC:
        return prof.default_kv_cache
    options = ", ".join(sorted(str(k) for k in prof.kv_caches))
    raise InvalidWorkload(
        f"kv_cache={workload.kv_cache} is not offered by runtime={prof.runtime}; use {options}")


def final_cache_tokens(workload: Inference) -> int:
    """Tokens per sequence in the cache after the last forward.

    generate() feeds each new token back except the last: prompt + new − 1 (new > 0); a plain forward
    caches the prompt. Source: transformers generation/utils.py (max_cache_length = max_length − 1).
    """
    return workload.prompt_tokens + max(workload.new_tokens - 1, 0)


def per_token_widths(att: AttentionSpec, prof: RuntimeProfile, *, tp: int) -> tuple[int, int]:
    """(K elements, V elements) cached per token on one layer and one GPU.

    GQA/MQA/MHA: num_kv_heads × head_dim each, split over tp ranks; with more ranks than KV heads each
    rank keeps one replicated head (vLLM's max(1, num_kv_heads // tp); parallel.validate_parallel asks tp
    to be a multiple of the KV heads then). MLA caches the compressed latent,
    replicated over tp: vLLM/SGLang/llama.cpp as one tensor (kv_lora_rank + qk_rope_head_dim, no V);
    transformers 5.17 as two single-head tensors, "keys" the normed latent (b, 1, s, kv_lora_rank) and
    "values" the rotated shared key (b, 1, s, qk_rope_head_dim), expanding per-head K and V from them in
    every layer's forward (a transient, see transients.py).
    Source: transformers 5.17 DeepseekV2Attention / DeepseekV3Attention.forward
    (`past_key_values.update(k_nope, k_pe)` before `expand_kv`); cache shapes checked on CPU with a tiny
    deepseek_v2 and deepseek_v3 config; vLLM MLA backend.
    """
    if att.mla is not None:
        mla = att.mla
        if prof.mla_latent_cache:
            return mla.kv_lora_rank + mla.qk_rope_head_dim, 0
        return mla.kv_lora_rank, mla.qk_rope_head_dim
    width = max(att.num_kv_heads // tp, 1) * att.head_dim   # tp > KV heads: each rank keeps one replica
    return width, width


SSM_STATE_DTYPE = DType.FP32
"""The SSM state transformers' cache keeps: `zeros_like(final_state)` of the scan, which runs in fp32
whatever the model dtype: Mamba-2's chunked scan (`hidden_states.float()`, B and C `.float()`), Mamba-1's
recurrent loop (`discrete_A · state + deltaB_u`, both fp32), the gated DeltaNet's torch_chunk_gated_delta_rule
(q, k, v, β and the decay cast to fp32). Source: transformers 5.17
cache_utils.LinearAttentionLayer.lazy_initialization (recurrent_states), mamba2_chunk_scan in
modeling_granitemoehybrid.py / modeling_nemotron_h.py, mamba_selective_scan in modeling_jamba.py and
torch_chunk_gated_delta_rule in modeling_qwen3_next.py (the torch paths, without mamba_ssm or
flash-linear-attention); checked against a real Qwen3-Next cache
(tests/crosscheck/test_qwen3_next_cache.py)."""


def mamba_state_bytes(mamba: MixerSpec, *, batch: int, conv_dtype: DType) -> tuple[int, int]:
    """(conv state bytes, SSM state bytes) one Mamba layer keeps for `batch` sequences, at any length.

    conv: batch × conv_dim × conv_kernel in the compute dtype (the dtype of in_proj's output slice);
    ssm: batch × ssm_state_elements (Mamba-2: num_heads × head_dim × d_state; Mamba-1: d_inner × d_state;
    gated DeltaNet: num_value_heads × key_head_dim × value_head_dim) in SSM_STATE_DTYPE.
    Source: transformers 5.17 cache_utils.LinearAttentionLayer.lazy_initialization (conv_states:
    zeros((*conv_states.shape[:-1], conv_kernel_size), dtype=conv_states.dtype)).
    """
    conv = batch * tensor_bytes(conv_dtype, mamba.conv_dim * mamba.conv_kernel)
    ssm = batch * tensor_bytes(SSM_STATE_DTYPE, mamba.ssm_state_elements)
    return conv, ssm


def layer_cache_tokens(att: AttentionSpec, *, tokens: int, kind: KvCache, prof: RuntimeProfile,
                       after_decode: bool, block_size: int) -> int:
    """Tokens one sequence keeps on one layer.

    Sliding layers: transformers' DynamicSlidingWindowLayer keeps a view of the last window − 1 tokens, so
    the prefill's full-length storage lives until the first decode step, then window tokens
    (Source: transformers 5.17 cache_utils.DynamicSlidingWindowLayer.update); static: min(window, length);
    paged: blocks of block_size (vLLM frees blocks that leave the window).
    """
    if att.sliding_window is not None and prof.sliding_cache_window:
        window = att.sliding_window
        if kind is KvCache.DYNAMIC:
            tokens = min(tokens, window) if after_decode else tokens
        else:
            tokens = min(tokens, window)
    if kind is KvCache.PAGED:
        tokens = -(-tokens // block_size) * block_size
    return tokens


def kv_cache_at(spec: ModelSpec, workload: Inference, *, tokens: int, after_decode: bool) -> Term:
    """The KV cache of every layer holding `tokens` per sequence on the most loaded GPU (bytes).

    bytes = batch × Σ_layers tokens_kept × (K width × K bytes + V width × V bytes); block-quantized
    llama.cpp types (q8_0, q4_0) count their per-block scales exactly. Mamba layers add their fixed-size
    conv and SSM states.
    """
    totals: dict[str, int] = {}
    for tensors, times in _layer_tensors(spec, workload, tokens=tokens, after_decode=after_decode):
        for name, nbytes in tensors:
            totals[name] = totals.get(name, 0) + nbytes * times
    return Term.group("kv_cache", [Term(name=n, nbytes=b) for n, b in totals.items()])


def kv_layer_bytes(spec: ModelSpec, workload: Inference, *,
                   tokens: int) -> list[tuple[tuple[str, int], ...]]:
    """(kind, bytes) of each layer's cache holding `tokens` (attention: K + V under its kind; Mamba: conv and
    SSM state apart), one entry per decoder layer in order (layers off the GPU, llama.cpp's CPU layers, hold
    none)."""
    out: list[tuple[tuple[str, int], ...]] = []
    for tensors, times in _layer_tensors(spec, workload, tokens=tokens, after_decode=False):
        summed: dict[str, int] = {}
        for name, nbytes in tensors:
            summed[name] = summed.get(name, 0) + nbytes
        out.extend([tuple(summed.items())] * times)
    return out


LayerCache = tuple[tuple[str, int], ...]
"""(kind, bytes) of each cache tensor one layer keeps for the whole batch: K and V under the attention kind
(V left out when it holds nothing: MLA's single latent), a Mamba layer's `conv_state` and `ssm_state`."""


def _layer_tensors(spec: ModelSpec, workload: Inference, *, tokens: int,
                   after_decode: bool) -> list[tuple[LayerCache, int]]:
    """(cache tensors, times) of the GPU layers for the whole batch, in layer order; a run of equal layers
    (one shared LayerSpec object) is computed once and counted `times`. A layer with attention and a Mamba
    mixer side by side (Falcon-H1) keeps both; an MLP-only block (Nemotron-H) none."""
    prof = profile(workload.runtime)
    kind = effective_kv_cache(workload, prof)
    k_dtype, v_dtype = cache_dtypes(spec, workload)
    b, tp = workload.batch_size, workload.parallel.tp
    memo: dict[int, LayerCache] = {}
    out: list[tuple[LayerCache, int]] = []
    for layer, times in layer_runs(_gpu_layers(spec, workload)):
        found = memo.get(id(layer))
        if found is None:
            tensors: list[tuple[str, int]] = []
            if layer.attention is not None:
                att = layer.attention
                k_width, v_width = per_token_widths(att, prof, tp=tp)
                kept = layer_cache_tokens(att, tokens=tokens, kind=kind, prof=prof, after_decode=after_decode,
                                          block_size=workload.block_size)
                name = _kind_name(att, prof)
                v_bytes = b * tensor_bytes(v_dtype, kept * v_width)
                tensors.append((name, b * tensor_bytes(k_dtype, kept * k_width)))
                tensors.extend([(name, v_bytes)] if v_bytes else [])
            if layer.mamba is not None:
                conv, ssm = mamba_state_bytes(layer.mamba, batch=b, conv_dtype=compute_dtype(spec, workload))
                tensors.extend([("conv_state", conv), ("ssm_state", ssm)])
            found = memo[id(layer)] = tuple(tensors)
        out.append((found, times))
    return out


def layer_runs(layers: tuple[LayerSpec, ...]) -> list[tuple[LayerSpec, int]]:
    """(layer, times) for each run of consecutive equal layers (ModelSpec shares one object per run)."""
    runs: list[tuple[LayerSpec, int]] = []
    for layer in layers:
        if runs and runs[-1][0] is layer:
            runs[-1] = (layer, runs[-1][1] + 1)
        else:
            runs.append((layer, 1))
    return runs


def kv_cache(spec: ModelSpec, workload: Inference) -> Term:
    """The KV cache at its largest: static caches at their allocated length, others at the final length."""
    prof = profile(workload.runtime)
    kind = effective_kv_cache(workload, prof)
    tokens = final_cache_tokens(workload)
    if kind is KvCache.STATIC and workload.max_cache_tokens is not None:
        tokens = workload.max_cache_tokens
    return kv_cache_at(spec, workload, tokens=tokens, after_decode=workload.new_tokens > 1)


def kv_tensor_bytes(spec: ModelSpec, workload: Inference, *, tokens: int) -> list[int]:
    """Bytes of each K and V tensor (one per layer each) holding `tokens`, for segment rounding."""
    return [size for sizes, times in kv_tensor_groups(spec, workload, tokens=tokens)
            for _ in range(times) for size in sizes]


def kv_tensor_groups(spec: ModelSpec, workload: Inference, *,
                     tokens: int) -> list[tuple[tuple[int, ...], int]]:
    """`kv_tensor_bytes` as ((K bytes, V bytes), times) per run of equal layers, for
    overhead.segment_reserved_repeated."""
    layers = _layer_tensors(spec, workload, tokens=tokens, after_decode=False)
    return [(tuple(nbytes for _, nbytes in tensors), times) for tensors, times in layers if tensors]


def kv_bytes_per_token(spec: ModelSpec, workload: Inference) -> int:
    """Cache bytes one more token adds to one sequence, over all (GPU) layers, ignoring windows and blocks."""
    prof = profile(workload.runtime)
    k_dtype, v_dtype = cache_dtypes(spec, workload)
    total = 0
    for layer in _gpu_layers(spec, workload):
        k_width, v_width = per_token_widths(attention_of(layer, what="a paged KV cache"), prof,
                                            tp=workload.parallel.tp)
        total += tensor_bytes(k_dtype, k_width) + tensor_bytes(v_dtype, v_width)
    return total


def _gpu_layers(spec: ModelSpec, workload: Inference) -> tuple:  # type: ignore[type-arg]
    """Layers whose cache sits on the most loaded GPU: all, llama.cpp's offloaded blocks (the last
    n_gpu_layers − 1: see `llama_cpp_gpu_start`), or ceil(layers / pp) under a pipeline/device_map split."""
    layers = spec.layers
    if workload.n_gpu_layers is not None:
        layers = layers[llama_cpp_gpu_start(spec.num_layers, workload.n_gpu_layers):]
    pp = workload.parallel.pp
    if pp > 1:
        layers = layers[: -(-len(layers) // pp)]
    return layers


def llama_cpp_gpu_start(num_layers: int, n_gpu_layers: int) -> int:
    """The first decoder block llama.cpp puts on the GPU for `--n-gpu-layers`: the output layer counts as
    one more slot and is offloaded first, then the last blocks, so blocks i_gpu_start … n − 1 go to the
    GPU with i_gpu_start = max(n + 1 − n_gpu_layers, 0), and the output layer whenever n_gpu_layers ≥ 1.
    Source: llama.cpp src/llama-model.cpp load_tensors (i_gpu_start = max(n_layer_all + 1 − n_gpu_layers,
    0); dev_output = get_layer_buft_list(n_layer_all)); the input embeddings always stay on the CPU."""
    return min(max(num_layers + 1 - n_gpu_layers, 0), num_layers)


def _kind_name(att: AttentionSpec, prof: RuntimeProfile) -> str:
    if att.mla is not None:
        return "mla_latent" if prof.mla_latent_cache else "mla"
    return "sliding" if att.sliding_window is not None else "full_attention"
