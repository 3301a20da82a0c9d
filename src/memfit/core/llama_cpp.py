"""llama.cpp: its own buffers (allocated = reserved), the GPU/CPU layer split of n_gpu_layers.

GGUF weights of the offloaded layers, the KV cache pre-allocated to n_ctx, one compute buffer, the CUDA
context; token_embd and the CPU layers (and their KV cache) in `Phase.host`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from memfit.core.choices import PhaseName
from memfit.core.errors import InvalidWorkload
from memfit.core.kv_cache import compute_dtype, kv_cache_at, kv_layer_bytes
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
    positions, layer_stage, output_stage = _compute_stages(spec, workload, prof, cells=cells)
    return positions + max(layer_stage, output_stage)


def _compute_stages(spec: ModelSpec, workload: Inference, prof: RuntimeProfile, *,
                    cells: int) -> tuple[int, int, int]:
    """(positions, layer stage, output stage) bytes of `llama_cpp_compute_bytes`; under a layer split each
    GPU with blocks reserves the layer stage, the one with the output layer the output stage."""
    ubatch = prof.compute_ubatch_tokens or LLAMA_CPP_UBATCH_TOKENS
    tokens = min(ubatch, workload.batch_size * (workload.max_cache_tokens or workload.total_tokens))
    mlp = mlp_of(spec.layers[0], what="llama.cpp")
    inter = mlp.expert.intermediate_size * mlp.top_k if isinstance(mlp, MoeSpec) else mlp.intermediate_size
    layer_stage = cells * tokens * MASK_BYTES + tokens * (3 * inter + 4 * spec.hidden_size) * 4
    output_stage = tokens * (spec.vocab_size * LOGIT_BYTES + 2 * spec.hidden_size * 4)
    return tokens * POSITION_BYTES, layer_stage, output_stage


def _output_layer(spec: ModelSpec, outside: dict[str, int]) -> tuple[int, int]:
    """(output_norm bytes, output matrix bytes): a tied model's matrix is token_embd, which a GPU copies."""
    matrix = outside.get("embeddings", 0) if spec.tie_word_embeddings else outside.get("lm_head", 0)
    return outside.get("final_norm", 0), matrix


@dataclass(frozen=True, slots=True, kw_only=True)
class LlamaCppDevice:
    """One GPU's buffers under llama.cpp's layer split (bytes)."""

    index: int
    blocks: tuple[int, ...]          # decoder blocks on this GPU
    output: bool                     # holds the output layer (output_norm and the output matrix)
    layers_bytes: int                # its blocks' weights (less experts kept on the CPU by --n-cpu-moe)
    head_bytes: int
    kv: tuple[tuple[str, int], ...]  # KV cache by attention kind
    compute_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.layers_bytes + self.head_bytes + sum(b for _, b in self.kv) + self.compute_bytes


def llama_cpp_layer_devices(num_layers: int, *, n_gpu_layers: int | None,
                            split: tuple[Fraction, ...]) -> tuple[int | None, ...]:
    """The GPU of each slot il = 0 … num_layers (the blocks, then the output layer); None: the CPU.

    Slots i_gpu_start … go to the GPUs (see `llama_cpp_gpu_start`); slot il goes to the first GPU whose
    cumulative share of `split` exceeds (il − i_gpu_start) / act_gpu_layers, act_gpu_layers =
    min(n_gpu_layers, num_layers + 1). Source: llama.cpp src/llama-model.cpp load_tensors (splits,
    get_layer_buft_list: std::upper_bound over the normalised cumulative splits; exact fractions here
    where llama.cpp uses float).
    """
    slots = num_layers + 1
    active = slots if n_gpu_layers is None else min(n_gpu_layers, slots)
    start = slots - active
    total = sum(split)
    bounds = [sum(split[: i + 1]) / total for i in range(len(split))]
    devices: list[int | None] = []
    for il in range(slots):
        share = Fraction(il - start, active) if il >= start else None
        devices.append(None if share is None else next(i for i, b in enumerate(bounds) if b > share))
    return tuple(devices)


def _split_of(workload: Inference) -> tuple[Fraction, ...]:
    """--tensor-split, one entry per GPU (--num-gpus spreads llama.cpp's layers as pipeline stages);
    without it an even split (llama.cpp splits by free memory: even on equal GPUs)."""
    num_gpus = workload.parallel.pp
    split = workload.tensor_split or (Fraction(1),) * num_gpus
    if len(split) != num_gpus:
        raise InvalidWorkload(f"tensor_split has {len(split)} entries for {num_gpus} GPU(s); give one per "
                              f"GPU (--num-gpus {len(split)})")
    return split


def llama_cpp_devices(spec: ModelSpec, workload: Inference,
                      prof: RuntimeProfile) -> tuple[LlamaCppDevice, ...]:
    """Each GPU's model, KV and compute buffers under llama.cpp's layer split (`llama_cpp_layer_devices`)."""
    dtype = compute_dtype(spec, workload)
    outside, blocks = per_layer_weights(spec, dtype=dtype, quant=workload.quant, runtime=workload.runtime)
    n = spec.num_layers
    split = _split_of(workload)
    placed = llama_cpp_layer_devices(n, n_gpu_layers=workload.n_gpu_layers, split=split)
    norm, matrix = _output_layer(spec, outside)
    cells = llama_cpp_cells(workload)
    whole = replace(workload, n_gpu_layers=None, parallel=replace(workload.parallel, pp=1))
    kv_layers = kv_layer_bytes(spec, whole, tokens=cells)
    positions, layer_stage, output_stage = _compute_stages(spec, workload, prof, cells=cells)
    devices = []
    for index in range(len(split)):
        mine = tuple(il for il in range(n) if placed[il] == index)
        kv: dict[str, int] = {}
        for il in mine:
            for kind, nbytes in kv_layers[il]:
                kv[kind] = kv.get(kind, 0) + nbytes
        output = placed[n] == index
        stages = [layer_stage] * bool(mine) + [output_stage] * output
        if len(split) == 1 and not stages:   # -ngl 0: the GPU still runs the batch's big matmuls
            stages = [layer_stage, output_stage]
        devices.append(LlamaCppDevice(
            index=index, blocks=mine, output=output,
            layers_bytes=sum(_gpu_block_bytes(blocks[il], il, workload) for il in mine),
            head_bytes=norm + matrix if output else 0, kv=tuple(kv.items()),
            compute_bytes=positions + max(stages) if stages else 0))
    return tuple(devices)


def _gpu_block_bytes(block: dict[str, int], index: int, workload: Inference) -> int:
    """A block's weights on its GPU: all of them, less its experts under --n-cpu-moe."""
    experts = block.get("layers/experts", 0) if index < workload.n_cpu_moe else 0
    return sum(block.values()) - experts


def llama_cpp_split_note(devices: tuple[LlamaCppDevice, ...]) -> str:
    """One line: each GPU's blocks and buffers, and which one the figures show."""
    top = max(devices, key=lambda d: d.total_bytes)
    parts = []
    for d in devices:
        blocks = f"blocks {d.blocks[0]}-{d.blocks[-1]}" if d.blocks else "no blocks"
        output = " + output" if d.output else ""
        parts.append(f"GPU{d.index} {blocks}{output}: {d.total_bytes / 2**30:.2f} GiB")
    return (f"llama.cpp layer split over {len(devices)} GPUs: " + "; ".join(parts)
            + f" (buffers without the CUDA context); figures are GPU{top.index}'s, the most loaded")


def llama_cpp_phases(spec: ModelSpec, workload: Inference, prof: RuntimeProfile) -> tuple[Phase, ...]:
    """llama.cpp on the most loaded GPU (`llama_cpp_devices`): the GGUF weights of its blocks and the output
    layer if it holds it, their KV cache pre-allocated to n_ctx, its compute buffer; the rest in host RAM
    (`Phase.host`): token_embd, the CPU blocks (with mmap, the default, their file pages), their KV cache
    and the logits output buffer.

    Placement (`kv_cache.llama_cpp_gpu_start`): --n-gpu-layers k puts the output layer on the GPU first,
    then the last k − 1 blocks, split over --num-gpus GPUs by --tensor-split; --n-cpu-moe N keeps the MoE
    experts of blocks 0 … N − 1 in host RAM (llama.cpp common/arg.cpp: a tensor-buffer override
    "blk.i.ffn_(up|down|gate)_exps" → CPU per block).
    """
    dtype = compute_dtype(spec, workload)
    outside, blocks = per_layer_weights(spec, dtype=dtype, quant=workload.quant, runtime=workload.runtime)
    devices = llama_cpp_devices(spec, workload, prof)
    top = max(devices, key=lambda d: d.total_bytes)
    on_gpu = {il for d in devices for il in d.blocks}
    cpu_layers = sum(sum(block.values()) for il, block in enumerate(blocks) if il not in on_gpu)
    cpu_experts = sum(sum(block.values()) - _gpu_block_bytes(block, il, workload)
                      for il, block in enumerate(blocks) if il in on_gpu)
    head_on_gpu = any(d.output for d in devices)
    norm, matrix = _output_layer(spec, outside)
    where = f"GPU{top.index} of {len(devices)}: " if len(devices) > 1 else ""
    blocks_note = f"blocks {top.blocks[0]}-{top.blocks[-1]}" if top.blocks else "no blocks"
    gpu_weights = Term.group("weights", [
        Term(name="layers", nbytes=top.layers_bytes,
             note=where + blocks_note if len(devices) > 1 or len(top.blocks) < spec.num_layers else ""),
        Term(name="lm_head", nbytes=top.head_bytes)])
    cache = Term.group("kv_cache", [Term(name=kind, nbytes=nbytes) for kind, nbytes in top.kv])
    compute = Term.group("activations", [Term(name="compute_buffer", nbytes=top.compute_bytes)])
    whole = replace(workload, n_gpu_layers=None, parallel=replace(workload.parallel, pp=1))
    all_kv = kv_cache_at(spec, whole, tokens=llama_cpp_cells(workload), after_decode=False).nbytes
    host = Term.group("host", [
        Term(name="embeddings", nbytes=outside.get("embeddings", 0)),   # token_embd stays in RAM
        Term(name="layers", nbytes=cpu_layers + cpu_experts,
             note=_host_layers_note(cpu_layers, cpu_experts, workload)),
        # tied: on the CPU the output layer is token_embd itself (TENSOR_DUPLICATED finds it in the same
        # buffer type: llama.cpp src/llama-model-loader.cpp create_tensor); only a GPU gets a copy
        Term(name="lm_head", nbytes=0 if head_on_gpu else norm + (0 if spec.tie_word_embeddings else matrix)),
        Term(name="kv_cache", nbytes=all_kv - sum(b for d in devices for _, b in d.kv)),
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


def _host_layers_note(cpu_layers: int, cpu_experts: int, workload: Inference) -> str:
    """What the host's layers hold: with mmap (llama.cpp's default) the CPU tensors stay file-backed pages
    of the GGUF in the page cache. Source: llama.cpp src/llama-model.cpp load_tensors (CPU_Mapped buffers)."""
    parts = ["file pages (mmap)"] if cpu_layers + cpu_experts else []
    if cpu_experts:
        parts.append(f"incl. experts of blocks 0-{workload.n_cpu_moe - 1}")
    return ", ".join(parts)
