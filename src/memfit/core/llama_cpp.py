"""llama.cpp: its own buffers (allocated = reserved), the GPU/CPU layer split of n_gpu_layers.

GGUF weights of the offloaded layers, the KV cache pre-allocated to n_ctx, one compute buffer, the CUDA
context; token_embd and the CPU layers (and their KV cache) in `Phase.host`.
"""

from __future__ import annotations

from dataclasses import replace

from memfit.core.choices import PhaseName
from memfit.core.kv_cache import (
    compute_dtype,
    kv_cache_at,
    llama_cpp_gpu_start,
)
from memfit.core.result import Phase, Term, memory
from memfit.core.runtimes import RuntimeProfile
from memfit.core.spec import ModelSpec, MoeSpec, mlp_of
from memfit.core.weights import per_layer_weights
from memfit.core.workload import Inference

LLAMA_CPP_CONTEXT_BYTES = 300 * 2**20
"""Device memory of a llama.cpp CUDA process before buffers (context, cuBLAS handle).
Source: estimate; llama.cpp does not report it (marked in assumptions)."""

LLAMA_CPP_CTX_PAD_TOKENS = 256
"""llama.cpp rounds the context (per sequence) up to a multiple of 256 cells before sizing the KV cache.
Source: llama.cpp src/llama-context.cpp llama_context::llama_context (cparams.n_ctx = GGML_PAD(n_ctx, 256);
n_ctx_seq = GGML_PAD(n_ctx / n_seq_max, 256)), as vendored by llama-cpp-python 0.3.36; checked on CPU by
benchmarks/llama_cpp_reference.py."""


def llama_cpp_cells(workload: Inference) -> int:
    """KV cells llama.cpp allocates per sequence: n_ctx (max_cache_tokens, else prompt + new tokens)
    rounded up to LLAMA_CPP_CTX_PAD_TOKENS."""
    n_ctx = workload.max_cache_tokens or workload.total_tokens
    return -(-n_ctx // LLAMA_CPP_CTX_PAD_TOKENS) * LLAMA_CPP_CTX_PAD_TOKENS


LLAMA_CPP_UBATCH_TOKENS = 512
"""llama.cpp's default n_ubatch. Source: llama.cpp src/llama-context.cpp llama_context_default_params."""
LOGIT_BYTES = 4
"""fp32 logits. Source: llama.cpp src/llama-context.cpp output_reserve (float logits)."""
MASK_BYTES = 2
"""The KQ mask holds F16 under flash attention (auto → on for CPU and CUDA), F32 without.
Source: llama.cpp src/llama-graph.cpp build_attn_inp_kq_mask."""
POSITION_BYTES = 4
"""inp_pos: one int32 position per token. Source: llama.cpp src/llama-graph.cpp build_inp_pos."""


def llama_cpp_compute_bytes(spec: ModelSpec, workload: Inference, prof: RuntimeProfile, *, cells: int) -> int:
    """The compute buffer llama.cpp reserves for its worst-case graph (bytes).

    llama.cpp reserves the prompt graph for n_tokens = min(n_ctx, n_ubatch) tokens over all sequences,
    every token an output. ggml's graph allocator frees each tensor after its last use, so the buffer is
    the larger of two stages, plus the positions (int32 per token):
    - a layer: the KQ mask (cells × n_tokens in MASK_BYTES, alive until the last attention) and one
      layer's fp32 intermediates, 3 × intermediate + 4 × hidden per token (MoE: intermediate × top_k);
    - the output: fp32 logits (vocab per token) beside the residual and the normed hidden state.
    Source: llama.cpp src/llama-context.cpp sched_reserve (n_outputs_pp = min(n_tokens, n_outputs_max)),
    ggml/src/ggml-alloc.c; benchmarks/llama_cpp_reference.py: the output stage exact, the layer stage
    within −0.2 % … +9.8 % of llama.cpp's CPU compute buffer.
    """
    ubatch = prof.compute_ubatch_tokens or LLAMA_CPP_UBATCH_TOKENS
    tokens = min(ubatch, workload.batch_size * (workload.max_cache_tokens or workload.total_tokens))
    mlp = mlp_of(spec.layers[0], what="llama.cpp")
    inter = mlp.expert.intermediate_size * mlp.top_k if isinstance(mlp, MoeSpec) else mlp.intermediate_size
    layer_stage = cells * tokens * MASK_BYTES + tokens * (3 * inter + 4 * spec.hidden_size) * 4
    output_stage = tokens * (spec.vocab_size * LOGIT_BYTES + 2 * spec.hidden_size * 4)
    return tokens * POSITION_BYTES + max(layer_stage, output_stage)


def _output_layer(spec: ModelSpec, outside: dict[str, int]) -> tuple[int, int]:
    """(output_norm bytes, output matrix bytes): a tied model's matrix is token_embd, which a GPU copies."""
    matrix = outside.get("embeddings", 0) if spec.tie_word_embeddings else outside.get("lm_head", 0)
    return outside.get("final_norm", 0), matrix


def llama_cpp_phases(spec: ModelSpec, workload: Inference, prof: RuntimeProfile) -> tuple[Phase, ...]:
    """llama.cpp: GGUF weights of the offloaded blocks and the output layer, KV pre-allocated to n_ctx for
    the offloaded blocks, one compute buffer; the rest in host RAM (`Phase.host`).

    Placement (`kv_cache.llama_cpp_gpu_start`): --n-gpu-layers k puts the output layer on the GPU first,
    then the last k − 1 blocks; --n-cpu-moe N keeps the MoE experts of blocks 0 … N − 1 in host RAM
    (llama.cpp common/arg.cpp: a tensor-buffer override "blk.i.ffn_(up|down|gate)_exps" → CPU per block).
    """
    dtype = compute_dtype(spec, workload)
    outside, blocks = per_layer_weights(spec, dtype=dtype, quant=workload.quant, runtime=workload.runtime)
    n = spec.num_layers
    start = 0 if workload.n_gpu_layers is None else llama_cpp_gpu_start(n, workload.n_gpu_layers)
    head_on_gpu = workload.n_gpu_layers is None or workload.n_gpu_layers >= 1
    cpu_experts = sum(block.get("layers/experts", 0)
                      for index, block in enumerate(blocks) if start <= index < workload.n_cpu_moe)
    gpu_layers = sum(sum(block.values()) for block in blocks[start:]) - cpu_experts
    cpu_layers = sum(sum(block.values()) for block in blocks[:start]) + cpu_experts
    norm, matrix = _output_layer(spec, outside)
    gpu_weights = Term.group("weights", [
        Term(name="layers", nbytes=gpu_layers, note=f"blocks {start}-{n - 1}" if start else ""),
        Term(name="lm_head", nbytes=norm + matrix if head_on_gpu else 0)])
    n_ctx = llama_cpp_cells(workload)
    cache = kv_cache_at(spec, workload, tokens=n_ctx, after_decode=False)
    compute = Term.group("activations", [
        Term(name="compute_buffer", nbytes=llama_cpp_compute_bytes(spec, workload, prof, cells=n_ctx))])
    host_full = kv_cache_at(spec, replace(workload, n_gpu_layers=None), tokens=n_ctx, after_decode=False)
    host = Term.group("host", [
        Term(name="embeddings", nbytes=outside.get("embeddings", 0)),   # token_embd stays in RAM
        Term(name="layers", nbytes=cpu_layers,
             note=f"incl. experts of blocks 0-{workload.n_cpu_moe - 1}" if cpu_experts else ""),
        # tied: on the CPU the output layer is token_embd itself (TENSOR_DUPLICATED finds it in the same
        # buffer type: llama.cpp src/llama-model-loader.cpp create_tensor); only a GPU gets a copy
        Term(name="lm_head", nbytes=0 if head_on_gpu else norm + (0 if spec.tie_word_embeddings else matrix)),
        Term(name="kv_cache", nbytes=host_full.nbytes - cache.nbytes),
        # logits of the last token of each sequence, in host memory (CUDA_Host / CPU output buffer)
        Term(name="output_buffer", nbytes=workload.batch_size * spec.vocab_size * LOGIT_BYTES),
    ])
    non_torch = Term.group("non_torch", [Term(name="cuda_context", nbytes=LLAMA_CPP_CONTEXT_BYTES)])
    load = Phase(name=PhaseName.LOAD, memory=memory([gpu_weights, cache, non_torch]), host=host)
    work = [gpu_weights, cache, compute, non_torch]
    phases = [load, Phase(name=PhaseName.PREFILL, memory=memory(work), host=host, at="compute buffer")]
    if workload.new_tokens > 1:
        phases.append(Phase(name=PhaseName.DECODE, memory=memory(work), host=host, at="compute buffer"))
    return tuple(phases)
