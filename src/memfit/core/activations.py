"""Activations of a training step: tensors autograd saves for backward, and the forward/backward transients.

The structure follows the tensors a transformers 5.17 decoder layer really saves (torch 2.11 autograd saves
an input only when the gradient that needs it is required; peft 0.21 LoRA; bitsandbytes 0.50 4-bit):

- RMSNorm (`LlamaRMSNorm`): `x.to(fp32)` saved by `pow` (4 B/feature); when its weight trains, also the
  normalised `hs.to(input_dtype)` saved by `weight * hs`; its output is saved by the Linears that read it.
- A Linear whose weight trains saves its input (grad_W = gᵀx); a frozen or 4-bit one saves nothing of x.
  Under autocast each Linear casts its input to bf16 itself, so q, k, v (gate, up) each save their own cast.
- peft LoRA (`lora.Linear.forward`): x cast to fp32, dropout keeps its output and a bool mask, `lora_A`
  its output for `lora_B`: (4 + 1)·fan_in + 4·rank bytes per token and adapted Linear.
- Attention core by backend: flash / memory-efficient save q, k, v, out and an fp32 logsumexp; the math
  fallback saves fp32 copies and the (heads × seq) probabilities; eager saves softmax's fp32 output and
  its low-precision copy, (heads × seq) each, plus repeated K/V.
- Gated MLP: act(gate) saves gate's output, the product saves act's and up's outputs, down saves the product.
- Family details: Gemma norms keep an fp32 normalised tensor; Python-written GELUs (gelu_new) keep their
  intermediates; a fused qkv output stays alive through v's view; Gemma 2 eager keeps the soft-capped
  scores; MoE keeps per routed copy the gathered input, expert intermediates and weighted output; peft
  all-linear on fused experts keeps W + ΔW per layer; config dropout > 0 keeps bool masks.
Per-token figures are bytes per token of one layer; `saved_activations` multiplies by tokens and layers.
Source: transformers/models/llama/modeling_llama.py, integrations/sdpa_attention.py,
peft/tuners/lora/layer.py; checked against the groundtruth rows h100-2026-11 (fwd end − fwd start per
case, within 0.3 %) and against the trace engine on Qwen3, Gemma 2/3, Phi-2/3, Mistral, SmolLM2, GPT-2,
Qwen1.5-MoE, Qwen3-MoE and Mixtral (peaks within 1.2 %).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from memfit.core.attention_kinds import eager_bytes_per_score, sdpa_backend, sdpa_by_default
from memfit.core.choices import AttnImpl, Checkpointing, Method, NormKind, Precision, SoftmaxDtype
from memfit.core.dtypes import DType
from memfit.core.optimizers import fused_param_adapters, peft_adapts_fused_experts
from memfit.core.params import Linear, layer_linears
from memfit.core.result import Gpu, Term
from memfit.core.spec import AttentionSpec, LayerSpec, MlpSpec, ModelSpec, MoeSpec, attention_of, mlp_of
from memfit.core.workload import Training

FP32_BYTES = 4
"""Bytes of an fp32 element (norm upcasts, softmax, LoRA inputs under peft, logsumexp)."""
MASK_BYTES = 1
"""Bytes per element of a dropout mask: torch native_dropout returns a bool mask."""
ACTIVATION_EXTRA_SAVED: dict[str, int] = {"gelu_new": 3, "gelu_fast": 6, "quick_gelu": 1, "relu": -1}
"""Intermediate-width tensors an activation saves beyond its input, per token (relu keeps its output, which
the next Linear keeps anyway, instead of its input). Each tensor-by-tensor product saves both operands, a
tanh its output: gelu_new keeps tanh's output, 0.5·x and 1 + tanh; gelu_fast keeps 0.0447·x, 0.798·x,
1 + 0.0447·x², tanh's output, 1 + tanh and 0.5·x. Source: transformers activations.py NewGELUActivation,
FastGELUActivation, QuickGELUActivation written as Python arithmetic; trace of gpt-neox-20b (gelu_fast)."""
AMP_ACTIVATION_SAVED_BYTES: dict[str, int] = {"gelu_new": 16}
"""Bytes per intermediate element an activation (with the down projection's bf16 input) saves under CUDA
autocast, where it differs from the bf16 count. gelu_new: autocast runs torch.pow in fp32, so pow keeps an
fp32 copy of its input (4), tanh's fp32 output (4), 0.5·x in bf16 (2), 1 + tanh in fp32 (4) and the down
projection its bf16 cast of the fp32 product (2): 16, not 10. Source: torch autocast_mode.cpp CUDA fp32 op
list (pow); transformers NewGELUActivation.forward."""
OUTPUT_SAVING_ACTIVATIONS = frozenset({"relu"})
"""Activations whose backward reads their own output: it stays saved even when the down projection is
frozen (LoRA). Source: torch relu's derivative (threshold_backward on `result`); saved_tensors_hooks on CPU
tensors of OPT with peft LoRA."""
INDEX_BYTES = 8
"""Bytes of an int64 index (torch.max(dim) saves its argmax for backward)."""
@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    """How tensors flow through the model under one training setup: element sizes and what trains.

    Family facts come from spec fields set by the family mappers:
    (spec.norm_fp32_output) Norms that multiply the weight in fp32 (`x.float()` normalised × (1 +
    w.float()); gpt-oss, OLMo-2: (w × normalised).to(dtype)): a trained weight also keeps the fp32
    normalised tensor (4 B, not 2). Source: transformers GemmaRMSNorm.forward, GptOssRMSNorm.forward,
    Olmo2RMSNorm.forward.
    (spec.norm_in_python) LayerNorm as Python arithmetic in fp32: (x − mean) is computed twice, once kept
    by pow, once by the product with rsqrt, and a trained weight keeps the fp32 normalised tensor: 2
    (frozen) or 3
    (trained) fp32 copies per norm where F.layer_norm keeps its input. Source: transformers 5.17
    CohereLayerNorm.forward, Cohere2LayerNorm.forward; saved_tensors_hooks on CPU tensors.
    (MlpSpec.clamped_glu) gpt-oss experts run a clamped GLU, (clamp(up) + 1) · g · sigmoid(α · g) with g =
    clamp(gate), over strided halves of one gate_up output: it keeps the gate_up output (2I), clamped
    gate, up + 1, sigmoid and g · sigmoid (4I) and the product (I, when the down projection trains): 7I
    where SwiGLU keeps 4I. Source: transformers 5.17 GptOssExperts._apply_gate; saved_tensors_hooks on CPU
    tensors.
    """

    residual_bytes: int       # residual stream: 2 (bf16/fp16), 4 (fp32, AMP, QLoRA after prepare_kbit)
    act_bytes: int            # Linear outputs and MLP intermediates
    attn_bytes: int           # q, k, v as the attention kernel receives them
    amp: bool                 # autocast: each Linear casts its input and weight to bf16/fp16
    base_trains: bool         # full fine-tuning: base weights (and norms) get gradients
    lora_rank: int            # 0: no LoRA
    lora_dropout: bool        # peft keeps a dropped copy and its mask
    lora_targets: frozenset[str]
    checkpointing: bool
    inputs_need_grad: bool    # the embeddings' output requires grad (full fine-tuning)
    attn: AttnImpl
    fp32_norm_output: bool = False  # Gemma-style norms keep the fp32 normalised tensor when trained
    python_layer_norm: bool = False  # Cohere: LayerNorm as fp32 Python arithmetic (2-3 fp32 copies)
    sdpa_supported: bool = True    # False: the family runs eager attention when SDPA is asked for
    alibi: bool = False            # config alibi (Falcon-RW): SDPA gets one float (b, heads, s, s) bias
    experts_adapted: bool = False  # peft all-linear on transformers-5 MoE: LoRA on the fused expert params
    merged_experts: bool = False   # ... over low-precision experts: W + ΔW is built and kept per layer
    experts_per_rank: Fraction = Fraction(1)  # expert parallelism: the share of routed experts a rank holds
    hidden_dropout: bool = False   # config resid_pdrop / hidden_dropout > 0: a bool mask per residual branch
    attn_dropout: bool = False     # config attention_dropout > 0: eager keeps a mask over the probabilities
    attn_dtype: DType = DType.BF16  # q, k, v's dtype at a 2-byte attn_bytes: fp16 under fp16 / amp-fp16
    gpu: Gpu | None = None         # the GPU whose SDPA backends apply (None: an H100)

    def adapted(self, lin: Linear) -> bool:
        return self.lora_rank > 0 and lin.is_module and lin.name in self.lora_targets


KBIT_UPCAST_KINDS = frozenset({"bnb-4bit", "bnb-int8"})
"""Quant kinds whose other weights prepare_model_for_kbit_training casts to fp32 (it skips GPTQ, AQLM,
EETQ, HQQ and torchao models). Source: peft 0.21 utils/other.py prepare_model_for_kbit_training."""


def upcasts_kept_weights(wl: Training) -> bool:
    """Whether prepare_kbit runs on a bitsandbytes base and casts its unquantized weights to fp32."""
    return wl.quant.kind in KBIT_UPCAST_KINDS and wl.lora is not None and wl.lora.prepare_kbit


def training_flow(spec: ModelSpec, wl: Training, *, lora_targets: frozenset[str],
                  gpu: Gpu | None = None) -> Flow:
    """The Flow of `wl` on `spec` (lora_targets: the Linear names that get an adapter)."""
    fp32 = wl.precision is Precision.FP32
    kbit_fp32 = upcasts_kept_weights(wl)
    residual = FP32_BYTES if (fp32 or wl.precision.is_amp or kbit_fp32) else 2
    # bnb Linear4bit returns its output in the input's dtype (fp32 after prepare_kbit); autocast: bf16
    act = FP32_BYTES if (fp32 or kbit_fp32) else 2
    attn_bytes = 2 if (wl.attn is AttnImpl.FLASH or wl.precision.is_amp) else act
    experts = (wl.method is not Method.FULL and wl.lora is not None
               and peft_adapts_fused_experts(spec, wl.lora))
    return Flow(
        residual_bytes=residual, act_bytes=act, attn_bytes=attn_bytes, amp=wl.precision.is_amp,
        base_trains=wl.method is Method.FULL,
        lora_rank=wl.lora.rank if wl.lora is not None and wl.method is not Method.FULL else 0,
        lora_dropout=wl.lora is not None and wl.lora.rate > 0,
        lora_targets=lora_targets if wl.method is not Method.FULL else frozenset(),
        checkpointing=wl.checkpointing.level > Checkpointing.NONE.level,
        inputs_need_grad=wl.method is Method.FULL, attn=wl.attn,
        hidden_dropout=spec.hidden_dropout, attn_dropout=spec.attention_dropout,
        fp32_norm_output=spec.norm_fp32_output, python_layer_norm=spec.norm_in_python,
        sdpa_supported=sdpa_by_default(spec), alibi=spec.alibi_float_bias,
        experts_adapted=experts, merged_experts=experts and residual == 2,
        experts_per_rank=Fraction(1, wl.parallel.ep),
        attn_dtype=DType.FP16 if wl.precision in (Precision.FP16, Precision.AMP_FP16) else DType.BF16,
        gpu=gpu,
    )


def attention_backend(att: AttentionSpec, flow: Flow, *, seq_len: int) -> str:
    """The kernel that runs attention: "flash", "efficient", "math" or "eager".

    SDPA as `attention_kinds.sdpa_backend` picks it: transformers passes enable_gqa=True and no mask for
    unpadded causal input; a sliding window shorter than the sequence (or Falcon's ALiBi bias) needs a mask,
    and with a mask transformers repeats K/V to every head first. MLA's value head is narrower than its
    query/key head (no flash). Source: transformers 5.17 integrations/sdpa_attention.py (use_gqa_in_sdpa).
    """
    if flow.attn is AttnImpl.EAGER or (flow.attn is AttnImpl.SDPA and not flow.sdpa_supported):
        return "eager"
    if flow.attn is AttnImpl.FLASH:
        return "flash"
    masked = (att.sliding_window is not None and att.sliding_window < seq_len) or flow.alibi
    return sdpa_backend(flow.attn_dtype if flow.attn_bytes == 2 else DType.FP32, q_dim=att.head_dim,
                        v_dim=att.mla.v_head_dim if att.mla is not None else att.head_dim,
                        grouped=att.num_kv_heads != att.num_heads and not masked, masked=masked,
                        enable_gqa=att.sdpa_gqa, gpu=flow.gpu, needs_grad=True)


def unique_layers(spec: ModelSpec) -> tuple[LayerSpec, ...]:
    """Each distinct layer object once (equal layers share one object), in order."""
    return tuple({id(layer): layer for layer in spec.layers}.values())


def _norm_bytes(kind: NormKind, width: int, flow: Flow, *, trains: bool) -> int:
    """Bytes per token a norm saves (its output excluded: the reader saves that)."""
    if kind is NormKind.RMS:
        normalised = FP32_BYTES if flow.fp32_norm_output else flow.residual_bytes
        return FP32_BYTES * width + (normalised * width if trains else 0)
    if flow.python_layer_norm:
        return FP32_BYTES * width * (3 if trains else 2)
    return flow.residual_bytes * width          # F.layer_norm saves its input (mean, rstd: one float each)


def inputs_bytes(readers: list[Linear], width: int, flow: Flow) -> int:
    """Bytes per token the Linears reading one tensor save of it (trained base weights only)."""
    if not readers or not flow.base_trains:
        return 0
    if flow.amp:
        return 2 * width * len(readers)          # one autocast bf16 copy per Linear
    return flow.residual_bytes * width            # the norm's output, shared


def lora_bytes(lin: Linear, flow: Flow) -> int:
    """Bytes per token one adapted Linear saves: fp32 dropout output and bool mask, and lora_A's output.

    Under autocast lora_A saves its own bf16 cast instead of the fp32 dropout output.
    Source: peft 0.21 lora/layer.py Linear.forward (x cast to lora_A's fp32 dtype, dropout, A, B).
    """
    in_bytes = 2 if flow.amp else FP32_BYTES
    out_bytes = 2 if flow.amp else FP32_BYTES
    mask = MASK_BYTES if flow.lora_dropout else 0
    return lin.count * ((in_bytes + mask) * lin.fan_in + out_bytes * flow.lora_rank)


def _shared_lora_inputs(layer: LayerSpec, lins: tuple[Linear, ...], flow: Flow, backend: str) -> int:
    """Bytes per token `lora_bytes` counts twice: without dropout (peft's Identity) and with inputs already
    in the adapters' fp32, every lora_A reading one tensor saves that same tensor (q/k/v the attention
    norm's output; gate/up the MLP norm's; one norm for both in a parallel block), and o_proj's reads the
    flash / memory-efficient kernel's output, which the kernel saves (its (b, s, heads, d) layout makes
    the transpose's .contiguous() a no-op); a dropout, a bf16 → fp32 cast or autocast's cast makes a copy
    per adapter instead. Source: peft 0.21 lora/layer.py Linear.forward; traces of Qwen2.5-14B fp32 LoRA
    (q, k and v saved one normed input) and Gemma-7B QLoRA (no copy of the attention output)."""
    if flow.lora_dropout or flow.amp or flow.act_bytes != FP32_BYTES:
        return 0
    h = min(lin.fan_in for lin in lins)
    attn = [lin for lin in lins if lin.role == "attention"][:-1]          # o_proj reads the attention output
    mlp = [lin for lin in lins if lin.role in ("mlp", "shared_experts") and lin.fan_in == h]
    groups = [attn + mlp] if layer.parallel_block and layer.norms_per_layer <= 1 else [attn, mlp]
    shared = 0
    for group in groups:
        adapted = [lin for lin in group if flow.adapted(lin) and lin.fan_in == h]
        shared += max(len(adapted) - 1, 0) * FP32_BYTES * h
    out_proj = [lin for lin in lins if lin.role == "attention"][-1]
    if backend in ("flash", "efficient") and flow.adapted(out_proj):
        shared += FP32_BYTES * out_proj.fan_in * out_proj.count
    return shared


def _fused_qkv_bytes(att: AttentionSpec, flow: Flow, backend: str, *, q_width: int, kv_width: int) -> int:
    """Bytes per token the fused q|k|v output adds beyond the q, k, v the kernel saves, when one of them
    reaches the kernel as a view of it (a view keeps the whole buffer alive).

    Without checkpointing transformers updates a DynamicCache in training (use_cache defaults to True),
    whose torch.cat gives the kernel fresh k and v; rotary gives it a fresh q. So: rotary with a cache,
    nothing is a view (0); rotary without a cache (checkpointing), v is (the buffer less v: q + k);
    no rotary (GPT-2, Falcon-RW's ALiBi) with a cache, q is (the buffer less q: k + v); no rotary and no
    cache, q, k and v are all views of the one buffer (0). Under autocast the kernel gets bf16 casts; eager
    and math attention multiply with matmul, which saves contiguous copies of transposed views (0).
    Source: transformers 5.17 Phi3Attention / GPT2Attention / FalconAttention and DynamicLayer.update
    (torch.cat); trace of Phi-3-mini LoRA (the buffer absent) and GPT-2 (present)."""
    if not att.fused_qkv or att.mla is not None or flow.amp or att.qkv_copies or backend in ("eager", "math"):
        return 0
    if att.rotary:
        return flow.act_bytes * (q_width + kv_width // 2) if flow.checkpointing else 0
    return 0 if flow.checkpointing else flow.act_bytes * kv_width


def _softmax_out_bytes(att: AttentionSpec, flow: Flow) -> int:
    """Bytes per score of eager attention's softmax output, in the dtype the family takes it in."""
    match att.softmax_dtype:
        case SoftmaxDtype.FP32:
            return FP32_BYTES
        case SoftmaxDtype.HIDDEN:
            return flow.residual_bytes
        case _:
            return flow.attn_bytes


def _softmax_bytes(att: AttentionSpec, flow: Flow, backend: str) -> tuple[int, int]:
    """(bytes alive per score at the softmax, bytes per score the layer keeps for backward) of eager or
    math attention. Eager: the masked scores in q's dtype, the fp32 copy softmax(dtype=float32) makes of
    them, its output (fp32, or q's dtype in families that skip the upcast); kept: the softmax output and
    the probabilities P·V reads (its cast, or dropout's output, with a bool mask). Math: fp32 scores and
    probabilities (the mask added in place); kept: the probabilities (+ dropout's output and mask). The
    eager recipe is the family's (`attention_kinds.eager_bytes_per_score`).
    Source: transformers 5.17 eager_attention_forward; torch _scaled_dot_product_attention_math."""
    ab = flow.attn_bytes
    if backend == "math":
        dropped = (FP32_BYTES + MASK_BYTES) if flow.attn_dropout else 0
        return 2 * FP32_BYTES, FP32_BYTES + dropped
    softmax = _softmax_out_bytes(att, flow)
    second = softmax > ab or flow.attn_dropout
    kept = softmax + (ab if second else 0) + (MASK_BYTES if flow.attn_dropout else 0)
    # the family's own recipe up to its softmax, as inference runs it (no previous layer's probabilities:
    # training keeps every layer's anyway)
    return eager_bytes_per_score(att, DType.BF16 if ab < FP32_BYTES else DType.FP32), kept


def _attention_core(att: AttentionSpec, flow: Flow, *, seq_len: int) -> int:
    """Bytes per token the attention kernel saves, including its output (o_proj's input)."""
    if att.mla is not None:
        q_width = att.num_heads * att.mla.qk_head_dim
        kv_width = q_width + att.num_heads * att.mla.v_head_dim   # MLA expands K and V per head
        out_width = att.num_heads * att.mla.v_head_dim
        rep = 0
        # latent norms: fp32 input (+ normalised copy when trained) and the output the b-projection keeps
        latent = (att.mla.q_lora_rank or 0) + att.mla.kv_lora_rank
        extra = (FP32_BYTES + 2 * flow.residual_bytes if flow.base_trains else FP32_BYTES) * latent
    else:
        extra = 0
        q_width = out_width = att.num_heads * att.head_dim
        kv_width = 2 * att.num_kv_heads * att.head_dim
        rep = 2 * q_width - kv_width                # repeat_kv copies (GQA) replace k and v
    ab = flow.attn_bytes
    lse = FP32_BYTES * att.num_heads
    backend = attention_backend(att, flow, seq_len=seq_len)
    extra += _fused_qkv_bytes(att, flow, backend, q_width=q_width, kv_width=kv_width)
    # eager/math: the output copy is o_proj's input, kept only when o_proj's weight trains
    out = ab * out_width if flow.base_trains else 0
    probs = att.num_heads * seq_len
    if backend == "flash":
        core = ab * (q_width + kv_width + out_width) + lse
    elif backend == "efficient" and att.sliding_window is not None and att.sliding_window < seq_len \
            and not flow.alibi:
        # repeat_kv copies, and the bool mask converted to a (seq × seq) bias in q's dtype
        core = ab * (q_width + kv_width + rep + out_width + seq_len) + lse
    elif backend == "efficient":
        core = ab * (q_width + kv_width + out_width) + lse
    elif backend == "math" and flow.amp and att.sdpa_gqa:
        # under autocast the math kernel's matmuls cast their inputs to bf16/fp16 (saved at 2 B: scaled q,
        # k and v repeated to every head by enable_gqa, the probabilities) and its softmax runs in fp32
        # (its output saved at 4 B). Source: trace of Llama-3.2-1B LoRA amp-fp16 on a T4 (math, s1024):
        # 53.2 KiB per token and layer over the fp32 recipe below, as this predicts (2 × 32,768 − 2 ×
        # 6,144 B). Families that broadcast K/V themselves (no enable_gqa) keep the fp32 recipe: it is
        # what their H100 traces were calibrated on (Falcon)
        kv_saved = 2 * q_width
        dropped = (ab + MASK_BYTES) * probs if flow.attn_dropout else 0
        core = ab * (q_width + kv_saved) + (FP32_BYTES + ab) * probs + dropped + out
    elif backend == "math":
        # fp32 scaled q, k and v (repeated to every head with enable_gqa, else broadcast), fp32
        # probabilities, and with attention dropout (transformers passes it to SDPA in training) the
        # dropped probabilities and their bool mask
        kv_saved = 2 * q_width if att.sdpa_gqa else kv_width
        dropped = (FP32_BYTES + MASK_BYTES) * probs if flow.attn_dropout else 0
        core = FP32_BYTES * (q_width + kv_saved + probs) + dropped + out
    else:
        # eager: q, repeated k and v, the fp32 softmax output and the probabilities P·V reads: its cast to
        # q's dtype, or dropout's output (+ its bool mask) when the config drops attention; fp32 without
        # dropout reads the softmax output itself
        softmax = _softmax_out_bytes(att, flow)
        second = softmax > ab or flow.attn_dropout
        kept = softmax * probs + (ab * probs if second else 0)
        if att.sinks:
            # gpt-oss: softmax in q's dtype over cat(scores, sink) (seq + 1 wide, one buffer the P·V
            # matmul reads as a strided view) and the int64 argmax of the max subtraction.
            # Source: transformers 5.17 gpt_oss eager_attention_forward; saved_tensors_hooks on CPU.
            kept = ab * att.num_heads * (seq_len + 1) + INDEX_BYTES * att.num_heads
        mask = MASK_BYTES * probs if flow.attn_dropout else 0
        softcap = ab * probs if att.softcap else 0        # tanh's output of the capped scores
        core = ab * (q_width + kv_width + rep) + kept + mask + softcap + out
    return core + extra


def _shared_expert_bytes(mlp: MoeSpec, flow: Flow) -> int:
    """Bytes per token the shared experts save beyond their input: gate out, act out, up out and product
    (gated), else up out and act out."""
    if mlp.shared_expert is None:
        return 0
    return (4 if mlp.shared_expert.gated else 2) * mlp.shared_expert.intermediate_size * flow.act_bytes


def shared_expert_freed_bytes(layer: LayerSpec, flow: Flow) -> int:
    """Bytes per token of an MoE layer's saved tensors freed before its routed experts' backward: the
    shared experts', when they run after the routed experts in forward (DeepSeek: `experts(...)` then
    `+ shared_experts(residuals)`), so autograd runs their backward first and releases what they saved;
    0 when they run first (MoeSpec.shared_expert_first) or are the layer's own MLP.
    Source: transformers 5.17.0 DeepseekV2MoE.forward; torch autograd (reverse creation order, saved
    tensors released after their node runs); multi-rank trace of DeepSeek-V2-Lite (peak at _grouped_mm)."""
    mlp = mlp_of(layer, what="training")
    if not isinstance(mlp, MoeSpec) or mlp.shared_expert_first or mlp.shared_expert_is_mlp:
        return 0
    return _shared_expert_bytes(mlp, flow)


def _mlp_bytes(h: int, layer: LayerSpec, flow: Flow, lins: tuple[Linear, ...]) -> int:
    """Bytes per token the MLP (or MoE block) saves, LoRA excluded."""
    mlp = mlp_of(layer, what="training")
    act = flow.act_bytes
    if isinstance(mlp, MoeSpec):
        trains = flow.base_trains or flow.experts_adapted
        i = mlp.expert.intermediate_size
        widths = 7 if mlp.expert.clamped_glu else 4 if mlp.expert.gated else 2
        expert = widths * i * act - (0 if trains else i * act)
        gathered = flow.residual_bytes * h if trains else 0
        # per routed copy (every expert under dense dispatch): gathered input, expert intermediates, the
        # weighted output; router fp32 softmax
        routed = mlp.routed_rows * (gathered + expert + act * h)
        router = 2 * FP32_BYTES * mlp.num_experts
        readers = [lin for lin in lins if lin.role in ("router", "shared_experts") and lin.fan_in == h]
        return routed + router + _shared_expert_bytes(mlp, flow) + inputs_bytes(readers, h, flow)
    return _dense_mlp_bytes(h, mlp, flow, lins)


def moe_whole_token_bytes(h: int, layer: LayerSpec, flow: Flow, lins: tuple[Linear, ...]) -> int:
    """Bytes per token of an MoE block's saved tensors that are hidden-wide, so whole on every tensor-
    parallel rank when the experts are split on their intermediate dimension: each routed row's gathered
    input and weighted output, the router's fp32 softmax and the inputs of the router and shared experts
    (`_mlp_bytes`' terms without the experts' intermediates). 0 for a dense MLP.
    Source: transformers 5.17 integrations/moe.py grouped_mm_experts_forward (selected_hidden_states_g and
    the down projection's output are hidden-wide), distributed/tensor_parallel.py MoeExpertsParallel."""
    mlp = mlp_of(layer, what="training")
    if not isinstance(mlp, MoeSpec):
        return 0
    trains = flow.base_trains or flow.experts_adapted
    gathered = flow.residual_bytes * h if trains else 0
    readers = [lin for lin in lins if lin.role in ("router", "shared_experts") and lin.fan_in == h]
    return (mlp.routed_rows * (gathered + flow.act_bytes * h) + 2 * FP32_BYTES * mlp.num_experts
            + inputs_bytes(readers, h, flow))


def _dense_mlp_bytes(h: int, mlp: MlpSpec, flow: Flow, lins: tuple[Linear, ...]) -> int:
    act = flow.act_bytes
    i = mlp.intermediate_size
    # gated: gate out, act out, up out, product (down's input); plain: up out, act out
    inner = (4 if mlp.gated else 2 + ACTIVATION_EXTRA_SAVED.get(mlp.activation, 0)) * i * act
    if flow.amp and not mlp.gated and mlp.activation in AMP_ACTIVATION_SAVED_BYTES:
        inner = AMP_ACTIVATION_SAVED_BYTES[mlp.activation] * i
    if not flow.base_trains and mlp.activation not in OUTPUT_SAVING_ACTIVATIONS:
        inner -= i * act                            # a frozen down_proj does not keep the product
    readers = [lin for lin in lins if lin.role == "mlp"][:-1]     # down_proj is listed last
    return inner + inputs_bytes(readers, h, flow)


def layer_token_bytes(spec: ModelSpec, layer: LayerSpec, flow: Flow, *, seq_len: int,
                      first: bool = False) -> dict[str, int]:
    """Bytes per token one decoder layer saves for backward, by part (norms, attention, mlp, lora).

    `first`: layer 0, whose input needs no grad under LoRA (its input norm saves nothing); when none of
    its attention matrices is adapted either, nothing on the attention half requires grad (the attention
    and the post-attention norm save nothing: autograd records no op whose inputs need no grad).
    """
    h = spec.hidden_size
    lins = layer_linears(spec, layer)
    att = attention_of(layer, what="training")
    norm_in = 0 if (first and not flow.inputs_need_grad) else _norm_bytes(layer.norm, h, flow,
                                                                            trains=flow.base_trains)
    one_norm = _norm_bytes(layer.norm, h, flow, trains=flow.base_trains)
    # norms that run: OPT's non-affine LayerNorms have no parameters but still run
    applied = max(layer.norms_per_layer, 1 if layer.parallel_block else 2)
    if layer.parallel_block and layer.norm is not NormKind.RMS and not flow.python_layer_norm:
        one_norm = 0        # both parallel LayerNorms read the layer input: F.layer_norm saves it once
    norms = norm_in + (applied - 1) * one_norm
    if flow.hidden_dropout:
        norms += 2 * MASK_BYTES * h                 # dropout masks on the attention and MLP branches
    attn_lins = [lin for lin in lins if lin.role == "attention"]
    readers = [lin for lin in attn_lins[:-1] if lin.fan_in == h]   # o_proj is listed last
    attention = _attention_core(att, flow, seq_len=seq_len) + inputs_bytes(readers, h, flow)
    if att.qk_norm.value != "none":
        width = att.num_heads * att.head_dim + att.num_kv_heads * att.head_dim
        attention += _norm_bytes(att.qk_norm_kind, width, flow, trains=flow.base_trains)
    if first and not flow.inputs_need_grad and not any(flow.adapted(lin) for lin in attn_lins):
        attention = 0
        norms -= one_norm if not layer.parallel_block else 0     # the post-attention norm's input
        norms -= MASK_BYTES * h if flow.hidden_dropout else 0     # the attention branch's dropout
    lora = sum(lora_bytes(lin, flow) for lin in lins if flow.adapted(lin))
    lora -= _shared_lora_inputs(layer, lins, flow, attention_backend(att, flow, seq_len=seq_len))
    mlp = _mlp_bytes(h, layer, flow, lins)
    if layer.parallel_block and applied == 1 and not flow.amp:
        mlp -= inputs_bytes(readers, h, flow)      # attention and MLP read one shared norm output
    return {"norms": norms, "attention": attention, "mlp": max(0, mlp), "lora": lora}


def merged_expert_bytes(spec: ModelSpec, layer: LayerSpec, flow: Flow) -> tuple[int, int]:
    """(bytes of W + ΔW for every fused expert parameter of `layer`, and of the LoRA factors cast to the
    weights' dtype; elements of the largest W + ΔW).

    peft's ParamWrapper over bf16/fp16 experts parametrizes the weight as baddbmm(W, lhs, rhs): the fold
    W + ΔW, kept by the experts' matmuls for backward, and lhs / rhs, the fp32 A and B factors cast to the
    weights' dtype (`.to(param.dtype)` copies them), kept by baddbmm for its own backward. Source: peft 0.21
    lora/layer.py ParamWrapper._activate_lora, get_delta_factors, _LoraFactorsProxy; transformers-5 MoE
    experts are fused 3-D Parameters; saved tensors of one Qwen3-30B-A3B layer on CPU (peft 0.21.2): bf16
    (E, 2r, h), (E, 2I, 2r), (E, r, I), (E, h, r) beside the two W + ΔW.
    """
    if not flow.merged_experts:
        return 0, 0
    experts = [lin for lin in layer_linears(spec, layer) if lin.role == "experts" and not lin.is_module]
    ep = flow.experts_per_rank.denominator // flow.experts_per_rank.numerator
    factors = sum(t.rows * t.cols for lin in experts
                  for t in fused_param_adapters(spec, lin, 1, flow.lora_rank, ep=ep))
    weights = [_local_weights(lin, flow) for lin in experts]
    return 2 * (sum(weights) + factors), max(weights, default=0)


def _local_weights(lin: Linear, flow: Flow) -> int:
    """Elements of a fused expert parameter on one rank: its num_experts / ep experts under expert
    parallelism (each rank builds W + ΔW for its own experts only)."""
    share = lin.num_weights * flow.experts_per_rank
    return share.numerator // share.denominator


def merged_expert_backward_elements(spec: ModelSpec, layer: LayerSpec, flow: Flow) -> int:
    """Elements by which one fused parameter's W + ΔW gradient outgrows the W + ΔW its layer has freed by
    then, at the worst of the layer's expert backwards: max over k of w_k − Σ_{j>k} w_j (forward order).

    Autograd runs the experts' matmuls in reverse (down_proj before gate_up_proj) and frees each node's
    saved W + ΔW when the node is done, so gate_up's gradient (2·I·H per expert) meets gate_up's W + ΔW
    but no longer down's (H·I): the excess over the saved W + ΔW is max(w_down, w_gate_up − w_down).
    Source: torch autograd engine (saved tensors released after their node runs); multi-rank trace of
    DeepSeek-V2-Lite and Qwen3-30B-A3B LoRA under FSDP with checkpointing (peak at aten._grouped_mm).
    """
    if not flow.merged_experts:
        return 0
    experts = [_local_weights(lin, flow) for lin in layer_linears(spec, layer) if lin.role == "experts"
               and not lin.is_module]
    return max((w - sum(experts[k + 1:]) for k, w in enumerate(experts)), default=0)


MLP_ROLES = frozenset({"mlp", "experts", "shared_experts", "router"})
"""Linear roles on the MLP half of a decoder layer."""


def mlp_half_token_bytes(spec: ModelSpec, layer: LayerSpec, flow: Flow, *, seq_len: int) -> int:
    """Bytes per token of a layer's saved tensors that backward frees before attention's backward starts:
    the MLP block's, its adapters' inputs, o_proj's adapter input and (sequential blocks) the
    post-attention norm's. Backward runs the layer in reverse, so attention's big score gradients never
    meet these. Parallel blocks (GPT-J, Falcon, Phi) free the MLP branch first too (autograd runs the
    later-created branch first) but share one norm with attention.
    Source: torch autograd engine (reverse sequence order); trace of Llama-3.1-8B fp32 math SDPA."""
    lins = layer_linears(spec, layer)
    parts = layer_token_bytes(spec, layer, flow, seq_len=seq_len)
    attn_out = [lin for lin in lins if lin.role == "attention"][-1:]        # o_proj is listed last
    adapters = sum(lora_bytes(lin, flow) for lin in lins
                   if flow.adapted(lin) and (lin.role in MLP_ROLES or lin in attn_out))
    norm = 0 if layer.parallel_block else _norm_bytes(layer.norm, spec.hidden_size, flow,
                                                      trains=flow.base_trains)
    return parts["mlp"] + adapters + norm


def _layer_total(spec: ModelSpec, layer: LayerSpec, flow: Flow, *, seq_len: int, first: bool) -> int:
    return sum(layer_token_bytes(spec, layer, flow, seq_len=seq_len, first=first).values())


def saved_activations(spec: ModelSpec, flow: Flow, *, batch: int, seq_len: int) -> Term:
    """Tensors saved for backward at the end of the forward pass, all layers (bytes), as a Term.

    With checkpointing (non-reentrant) each layer keeps only its input (residual dtype, hidden wide).
    The final norm saves its fp32 input, plus lm_head's input when lm_head trains.
    """
    tokens = batch * seq_len
    h = spec.hidden_size
    children: list[Term] = []
    if flow.checkpointing:
        children.append(Term(name="layer_inputs", nbytes=spec.num_layers * flow.residual_bytes * h * tokens,
                             note="non-reentrant checkpointing keeps each decoder layer's input"))
    else:
        parts: dict[str, int] = {}
        counts: dict[tuple[int, bool], tuple[LayerSpec, int]] = {}
        for index, layer in enumerate(spec.layers):   # equal layers share one object: count each once
            key = (id(layer), index == 0)
            counts[key] = (layer, counts.get(key, (layer, 0))[1] + 1)
        for (_, first), (layer, count) in counts.items():
            per = layer_token_bytes(spec, layer, flow, seq_len=seq_len, first=first)
            for name, value in per.items():
                parts[name] = parts.get(name, 0) + value * tokens * count
        merged = sum(merged_expert_bytes(spec, layer, flow)[0] for layer in spec.layers)
        children.append(Term.group("layers", [*(Term(name=k, nbytes=v) for k, v in parts.items()),
                                              Term(name="merged_expert_weights", nbytes=merged)]))
    backends = {attention_backend(attention_of(layer, what="training"), flow, seq_len=seq_len)
                for layer in unique_layers(spec)}
    if flow.alibi and "efficient" in backends:
        # Falcon's ALiBi + causal mask: one float bias built once per forward, kept by every layer (or, under
        # checkpointing, as an input of every checkpointed layer)
        heads = attention_of(spec.layers[0], what="training").num_heads
        children.append(Term(name="alibi_bias", nbytes=flow.attn_bytes * batch * heads * seq_len * seq_len))
    final = _norm_bytes(spec.final_norm or NormKind.RMS, h, flow, trains=flow.base_trains)
    head_input = (2 if flow.amp else flow.residual_bytes) * h if flow.base_trains else 0
    children.append(Term(name="final_norm", nbytes=(final + head_input) * tokens))
    return Term.group("activations", children)


def recomputed_layer_bytes(spec: ModelSpec, flow: Flow, *, batch: int, seq_len: int,
                           layers: tuple[LayerSpec, ...] | None = None) -> int:
    """Checkpointing: the largest layer's saved tensors (of `layers`, default all), rebuilt inside backward
    (bytes)."""
    return max(_layer_total(spec, one, flow, seq_len=seq_len, first=False) * batch * seq_len
               + merged_expert_bytes(spec, one, flow)[0] for one in layers or unique_layers(spec))


def recompute_and_backward_transient(spec: ModelSpec, flow: Flow, *, batch: int, seq_len: int,
                                     dequant: int = 0) -> tuple[int, int]:
    """Checkpointing: (the largest recomputed layer, the backward transient beside it), the transient such
    that their sum is the most one layer holds at once, its own recomputation plus its own backward buffers
    (a model whose layers differ, such as DeepSeek-V2's dense first layer before its MoE layers, has its
    largest recomputation and its largest MLP gradients in different layers)."""
    pairs = [(recomputed_layer_bytes(spec, flow, batch=batch, seq_len=seq_len, layers=(one,)),
              layer_transient_bytes(spec, flow, batch=batch, seq_len=seq_len, dequant=dequant, layers=(one,)))
             for one in unique_layers(spec)]
    most = max(rec for rec, _ in pairs)
    return most, max(rec + transient for rec, transient in pairs) - most


def forward_extra_bytes(spec: ModelSpec, flow: Flow, *, batch: int, seq_len: int) -> int:
    """Bytes alive at the forward peak beyond saved tensors: cache references and the final hidden state.

    Without checkpointing transformers builds a DynamicCache (use_cache defaults to True) holding every
    layer's rotated K and V until forward returns; SDPA flash saves those same tensors, eager and autocast
    keep other copies. `outputs.last_hidden_state` holds the final norm's output during the loss. Falcon-RW's
    float ALiBi bias lives through the whole layer loop.
    """
    tokens = batch * seq_len
    h = spec.hidden_size
    held = 0 if flow.base_trains and not flow.amp else flow.residual_bytes * h * tokens
    backends = {attention_backend(attention_of(layer, what="training"), flow, seq_len=seq_len)
                for layer in unique_layers(spec)}
    if flow.alibi and "efficient" not in backends:
        # Falcon's float ALiBi + causal bias in the hidden states' dtype lives through the layer loop; eager
        # adds it without saving it (SDPA's kernel saves it: saved_activations counts it then)
        heads = attention_of(spec.layers[0], what="training").num_heads
        held += flow.residual_bytes * batch * heads * seq_len * seq_len
    if flow.checkpointing:
        return held
    for layer in spec.layers:
        att = attention_of(layer, what="training")
        if att.mla is not None:
            continue
        kv = att.num_kv_heads * att.head_dim
        backend = attention_backend(att, flow, seq_len=seq_len)
        k_rot_bytes = FP32_BYTES if flow.amp and flow.residual_bytes == FP32_BYTES else flow.act_bytes
        if backend in ("eager", "math") and att.num_kv_heads != att.num_heads:
            held += (k_rot_bytes + flow.act_bytes) * kv * tokens
        elif flow.amp:
            held += k_rot_bytes * kv * tokens         # fp32 rotated K; SDPA saved its bf16 cast
    return held


def layer_transient_bytes(spec: ModelSpec, flow: Flow, *, batch: int, seq_len: int,
                          backward: bool = True, dequant: int = 0,
                          layers: tuple[LayerSpec, ...] | None = None) -> int:
    """Largest short-lived buffers while one layer runs backward (bytes): gradients of its big tensors,
    net of the layer's saved tensors already freed by then.

    eager/math: the (heads × seq) probability gradients in fp32 and low precision, less (in `backward`)
    the MLP half's saved tensors, freed before attention's backward (`mlp_half_token_bytes`); otherwise
    the MLP's three intermediate gradients; plus the residual-stream gradient in and out. The forward's
    last layer holds buffers of the same sizes with nothing freed (`backward=False`). `dequant`, a
    quantized weight dequantized for its matmul, lives beside the MLP's buffers, not attention's.
    """
    tokens = batch * seq_len
    h = spec.hidden_size
    worst = 0
    layers = layers or unique_layers(spec)
    for layer in layers:
        att = attention_of(layer, what="training")
        backend = attention_backend(att, flow, seq_len=seq_len)
        attn = 0
        if backend in ("eager", "math") and backward:
            # at softmax's backward: the gradients of its output and of its input, in its dtype; eager's
            # second copy of the probabilities (the cast or dropout's output P·V read) was freed with
            # P·V's node
            at_softmax, kept = _softmax_bytes(att, flow, backend)
            softmax_out = FP32_BYTES if backend == "math" else _softmax_out_bytes(att, flow)
            attn = (2 * softmax_out - (kept - softmax_out - (MASK_BYTES if flow.attn_dropout else 0))) \
                * att.num_heads * seq_len
            attn -= mlp_half_token_bytes(spec, layer, flow, seq_len=seq_len)
        elif backend in ("eager", "math"):
            # at the softmax: the masked scores, softmax's fp32 input copy and its output, beyond what
            # the layer keeps (its probabilities; its MLP half has not run yet). Under checkpointing the
            # forward keeps nothing of the layer: all of it is transient.
            at_softmax, kept = _softmax_bytes(att, flow, backend)
            if flow.checkpointing:
                attn = at_softmax * att.num_heads * seq_len
            else:
                attn = (at_softmax - kept) * att.num_heads * seq_len
                attn -= mlp_half_token_bytes(spec, layer, flow, seq_len=seq_len)
        layer_mlp = mlp_of(layer, what="training")
        i = layer_mlp.expert.intermediate_size * layer_mlp.routed_rows if isinstance(layer_mlp, MoeSpec) \
            else layer_mlp.intermediate_size
        # backward: the gradients of gate, up and their product (a plain MLP: of the activation's input and
        # output); forward: the activation's output beside
        # the saved tensors (and, for a quantized down projection, its compute-dtype cast of that input)
        gated = layer_mlp.expert.gated if isinstance(layer_mlp, MoeSpec) else layer_mlp.gated
        # (backward, MoE: net of the shared experts' saved tensors, freed when they run after the routed ones)
        mlp = max((3 if gated else 2) * i * flow.act_bytes - shared_expert_freed_bytes(layer, flow), 0) \
            if backward else i * flow.act_bytes + (i * 2 if dequant else 0)
        worst = max(worst, attn * tokens, mlp * tokens + dequant)
    # merged experts: the bf16 gradient of W + ΔW for the largest fused parameter (trace: Mixtral-8x7B); in
    # backward, net of the layer's later W + ΔW already freed (merged_expert_backward_elements)
    merged = max(merged_expert_backward_elements(spec, layer, flow) if backward
                 else merged_expert_bytes(spec, layer, flow)[1] for layer in layers)
    return worst + 2 * flow.residual_bytes * h * tokens + 2 * merged
