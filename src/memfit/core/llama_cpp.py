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
    head = outside.get("lm_head", 0) + outside.get("final_norm", 0)
    if spec.tie_word_embeddings:
        head = outside.get("embeddings", 0)   # the output matmul reads a copy of token_embd
    gpu_weights = Term.group("weights", [
        Term(name="layers", nbytes=gpu_layers, note=f"blocks {start}-{n - 1}" if start else ""),
        Term(name="lm_head", nbytes=head if head_on_gpu else 0)])
    n_ctx = workload.max_cache_tokens or workload.total_tokens
    cache = kv_cache_at(spec, workload, tokens=n_ctx, after_decode=False)
    ubatch = min(prof.compute_ubatch_tokens or 512, workload.prompt_tokens)
    mlp = mlp_of(spec.layers[0], what="llama.cpp")
    inter = mlp.expert.intermediate_size * mlp.top_k if isinstance(mlp, MoeSpec) else mlp.intermediate_size
    # ggml graph allocator: fp32 intermediates of one layer for a ubatch, and fp32 logits of the outputs
    compute = Term.group("activations", [
        Term(name="compute_buffer",
             nbytes=workload.batch_size * ubatch * (3 * inter + 4 * spec.hidden_size) * 4),
    ])
    out_logits = Term.group("logits", [Term(name="output", nbytes=workload.batch_size * spec.vocab_size * 4)])
    host_full = kv_cache_at(spec, replace(workload, n_gpu_layers=None), tokens=n_ctx, after_decode=False)
    host = Term.group("host", [
        Term(name="embeddings", nbytes=outside.get("embeddings", 0)),   # token_embd stays in RAM
        Term(name="layers", nbytes=cpu_layers,
             note=f"incl. experts of blocks 0-{workload.n_cpu_moe - 1}" if cpu_experts else ""),
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
