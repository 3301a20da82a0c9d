"""Prefill and decode working sets: the largest per-layer set of live temporaries, by step.

A decoder layer's forward under `torch.no_grad()` (transformers 5.17, modeling_llama.py) holds, besides the
weights and the cache:
- across the whole layer loop: the embedding output (`inputs_embeds` stays referenced in the model's
  forward), the layer input (referenced by the caller's loop variable), rotary cos and sin;
- in the attention step: the normed input, q/k/v and their rotary copies, the SDPA output and its
  contiguous transpose, plus by implementation: eager's scores (compute dtype) and fp32 softmax, SDPA's
  repeated K/V and materialised bias when a mask is passed, flash's log-sum-exp;
- in the MLP step: the post-attention residual and the normed input, then gate, act(gate), up and their
  product (three intermediate-size tensors live at once), or a dequantised weight for bitsandbytes;
- in a norm: the fp32 upcast and its square.
The layer peak is the persistent set plus the largest step. Sizes are in bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from memfit.core.attention_kinds import alibi_bias, eager_bytes_per_score, runs_eager, sdpa_backend
from memfit.core.choices import AttnImpl, KvCache
from memfit.core.dtypes import DType
from memfit.core.kv_cache import compute_dtype
from memfit.core.params import Linear, layer_linears
from memfit.core.quants import bnb_4bit_fused
from memfit.core.result import Gpu, Term
from memfit.core.spec import (
    AttentionSpec,
    LayerSpec,
    MlpSpec,
    ModelSpec,
    MoeSpec,
    attention_of,
    mlp_of,
)
from memfit.core.ssm import mamba_decode_step, mamba_prefill_step
from memfit.core.workload import Inference

MATH_ACC_BYTES = 4
"""SDPA's math kernel computes in fp32 whatever its inputs (allow_fp16_bf16_reduction_math_sdp is off by
default). Source: torch 2.13 _scaled_dot_product_attention_math."""
SDPA_MASK_ALIGN = 16
"""SDPA's memory-efficient kernel pads an unaligned mask's last dim to a multiple of 16 (a copy of the
(batch, 1, q, kv) mask). Source: torch aten/src/ATen/native/transformers/attention.cpp pad_bias."""
PYTHON_ACTIVATION_LIVE: dict[str, int] = {"gelu_new": 4, "gelu_fast": 5, "quick_gelu": 3, "relu2": 3}
"""Intermediate-width tensors alive at once (input included) while a Python-written activation runs under
no_grad: gelu_new holds x, 0.5·x, x³ and 0.044715·x³; gelu_fast x, 0.5·x, 0.798·x, 0.044715·x and its
product with x; quick_gelu x, 1.702·x and its sigmoid; relu2 (ReLUSquaredActivation, Nemotron-H) x, relu(x)
and its square. Fused ones (gelu, silu, gelu_pytorch_tanh) hold 2.
Source: transformers 5.17 activations.py NewGELUActivation / FastGELUActivation / QuickGELUActivation;
gelu_new measured on real CPU tensors (GPT-2, a TorchDispatchMode over live storages: 4)."""
INT8_OUTLIER_BYTES_PER_WEIGHT = 7
"""LLM.int8 inference with threshold 6.0: when input columns exceed the threshold the weight's outlier
columns are sliced (int8, 1 B), dequantised (fp32, 4 B) and cast (compute dtype, 2 B); with random-weight
activations nearly every column counts. Source: bitsandbytes MatMul8bitLt.forward (subB); groundtruth
l8b-int8-gen-b1-p512-n64 (a worst case: a Linear's full weight)."""
BNB_4BIT_COMPUTE = DType.BF16
"""The dtype bitsandbytes 4-bit layers dequantise to and multiply in: memfit's nf4/fp4 load with
bnb_4bit_compute_dtype=bfloat16 (as QLoRA recipes do; transformers' own default is float32), whatever dtype
the activations run in. Source: memfit measure/run.py BitsAndBytesConfig; trace/standins.py."""
INT8_ACTIVATION_BYTES_PER_ELEMENT = 3
"""LLM.int8 quantises the input: an fp16 copy (2 B) and int8 codes (1 B) per element.
Source: bitsandbytes int8_vectorwise_quant(A.to(float16))."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One forward pass: `query_tokens` per sequence attending to `kv_tokens` (cache included)."""

    query_tokens: int
    kv_tokens: int
    masked: bool          # an explicit mask reaches every layer (static cache); sliding layers shorter
                          # than kv_tokens get one too (_attention_step)
    gpu: Gpu | None = None  # whose SDPA backends apply (None: an H100)


def layer_peak(spec: ModelSpec, workload: Inference, step: Step) -> tuple[Term, int]:
    """The largest layer working set of one forward step: (activations Term, dequantisation bytes in it)."""
    return max(layer_working_sets(spec, workload, step).values(), key=lambda c: c[0].nbytes + c[1])


def layer_working_sets(spec: ModelSpec, workload: Inference, step: Step) -> dict[int, tuple[Term, int]]:
    """Each distinct layer's working set in one forward step, keyed by id() of its shared LayerSpec."""
    return {id(layer): _layer_working_set(spec, layer, workload, step)
            for layer in {id(layer): layer for layer in spec.layers}.values()}


def _layer_working_set(spec: ModelSpec, layer: LayerSpec, workload: Inference,
                       step: Step) -> tuple[Term, int]:
    dt = compute_dtype(spec, workload).nbytes(1)
    b, s = workload.batch_size, step.query_tokens
    tokens = b * s
    h = spec.hidden_size
    hidden = tokens * h * dt                                 # (b, s, hidden) in the compute dtype
    first = spec.attention_specs[0] if spec.attention_specs else None
    # cos and sin, (b, s, head_dim) each; one pair per layer type where the family ropes them apart
    tables = len({att.sliding_window is None for att in spec.attention_specs}) \
        if spec.rotary_per_layer_type else 1
    rotary_dim = int(first.head_dim * spec.rotary_fraction) if first is not None else 0
    rotary = 2 * tables * tokens * rotary_dim * dt if spec.rotary_buffer else 0
    # Falcon-RW: the (b, heads, s, kv) ALiBi + causal bias lives through the whole layer loop
    bias = b * first.num_heads // workload.parallel.tp * s * step.kv_tokens * dt \
        if alibi_bias(spec) and first is not None else 0
    unused_mask = b * s * step.kv_tokens if spec.unused_sliding_mask else 0
    sliding_mask = 0 if unused_mask or runs_eager(spec, workload.attn) else max(
        (b * s * seen_kv(att, step) for att in spec.attention_specs if sliding_masked(att, step)), default=0)
    persistent = Term.group("hidden", [
        Term(name="inputs_embeds", nbytes=hidden), Term(name="layer_input", nbytes=hidden),
        Term(name="rotary", nbytes=rotary), Term(name="alibi_bias", nbytes=bias),
        Term(name="unused_sliding_mask", nbytes=unused_mask),
        Term(name="sliding_mask", nbytes=sliding_mask),
    ])
    norm = Term.group("norm", [Term(name="fp32_upcast", nbytes=2 * tokens * h * 4)])
    steps: list[tuple[Term, int]] = [(norm, 0)]      # (live set, dequantisation bytes beside it)
    if layer.attention is not None:
        attention = _attention_step(spec, layer, workload, step, hidden=hidden, dt=dt)
        if layer.mamba is not None:
            # side by side (Falcon-H1): attention runs after the Mamba mixer, beside its output and its own
            # input × attention_in_multiplier
            attention = Term.group("attention", [*attention.children,
                                                 Term(name="mamba_output", nbytes=hidden),
                                                 Term(name="scaled_input", nbytes=hidden)])
        steps.insert(0, (attention, 0))
    if layer.mamba is not None:
        steps[0:0] = _mamba_steps(spec, layer, workload, step, hidden=hidden, dt=dt)
    if layer.mlp is not None:
        # a block without a mixer (Nemotron-H's MLP / MoE blocks) adds the MLP to the layer input itself
        mixed = layer.attention is not None or layer.mamba is not None
        steps.insert(len(steps) - 1, _mlp_step(spec, layer, workload, tokens=tokens, hidden=hidden, dt=dt,
                                               own_residual=mixed))
    step_term, dequant = max(steps, key=lambda item: item[0].nbytes + item[1])
    return Term.group("activations", [persistent, step_term]), dequant


def seen_kv(att: AttentionSpec, step: Step) -> int:
    """Keys one layer attends to in `step`: every cached token, except on a sliding (or chunked) layer of a
    dynamic cache past its first forward, which returns its window − 1 cached tokens and the new ones.
    Source: transformers 5.17 cache_utils.DynamicSlidingWindowLayer.update / get_mask_sizes."""
    s, kv = step.query_tokens, step.kv_tokens
    if att.sliding_window is None or step.masked or kv == s:
        return kv
    return min(kv, att.sliding_window - 1 + s)


def sliding_masked(att: AttentionSpec, step: Step) -> bool:
    """Whether a sliding (or chunked) layer gets an explicit (b, 1, s, kv) bool mask under SDPA: as soon as
    its keys reach the window. The mask is built once per forward and lives through the whole layer loop.
    Source: transformers 5.17 masking_utils._ignore_causal_mask_sdpa (`kv_length >= local_attention_size`),
    create_sliding_window_causal_mask / create_chunked_causal_mask; live storages on real CPU tensors
    (tiny llama4_text, chunk 128, prompt 256: the (2, 1, 256, 256) mask alive at the MoE peak)."""
    return att.sliding_window is not None and att.sliding_window <= seen_kv(att, step)


def _mamba_steps(spec: ModelSpec, layer: LayerSpec, workload: Inference, step: Step, *, hidden: int,
                 dt: int) -> list[tuple[Term, int]]:
    """A Mamba mixer's moments: the chunked scan over the prompt (or the recurrent update in decode), and
    in_proj running beside its quantized weight's dequantisation (bitsandbytes; the larger of in_proj's and
    out_proj's, which is in_proj's for every config seen)."""
    mamba = layer.mamba
    assert mamba is not None  # only called for Mamba layers
    b, s = workload.batch_size, step.query_tokens
    if s == 1 and step.kv_tokens > 1:
        scan = mamba_decode_step(mamba, b=b, hidden=hidden, dt=dt)
    else:
        scan = mamba_prefill_step(mamba, b=b, s=s, hidden=hidden, dt=dt)
    linears = [lin for lin in layer_linears(spec, layer) if lin.role == "mamba"]
    dequant = max((dequant_bytes(lin, workload, tokens=b * s, dt=dt) for lin in linears), default=0)
    projecting = Term.group("mamba", [Term(name="normed", nbytes=hidden),
                                      Term(name="in_proj", nbytes=b * s * mamba.in_proj_width * dt)])
    return [(scan, 0), (projecting, dequant)]


def _attention_step(spec: ModelSpec, layer: LayerSpec, workload: Inference, step: Step, *,
                    hidden: int, dt: int) -> Term:
    """The attention block's largest live set; an output-gated block (AttentionSpec.output_gate) at the
    largest of its kernel, its q_norm and its gating moments (_output_gated)."""
    kernel = _attention_kernel_step(spec, layer, workload, step, hidden=hidden, dt=dt)
    att = attention_of(layer)
    if not att.output_gate:
        return kernel
    b, s, tp = workload.batch_size, step.query_tokens, workload.parallel.tp
    # in a prefill, q_norm runs before the layer's first cache update: its new K/V (counted with the
    # cache) are not allocated yet
    unallocated = 2 * b * s * att.num_kv_heads // tp * att.head_dim * dt if step.kv_tokens == s else 0
    return _output_gated(kernel, q=b * s * att.num_heads // tp * att.head_dim, hidden=hidden, dt=dt,
                         unallocated=unallocated)


def _output_gated(kernel: Term, *, q: int, hidden: int, dt: int, unallocated: int) -> Term:
    """An output-gated attention block's largest live set (bytes), `q` query elements (b·s·heads·head_dim).

    q_proj writes the query and a per-head gate interleaved (2q); the gate's reshape copies it (q), alive
    to the end. Moments: the kernel's live set beside the gate copy; q_norm (Qwen3NextRMSNorm: fp32 upcast
    and square, then the normed fp32 copy and its product with 1 + weight: two fp32 q-sized tensors) beside
    q_proj's whole output and the gate copy; the gating (the rotated query kept, the attention output,
    sigmoid(gate) and the product: three q-sized) beside the gate copy. `unallocated`: cache bytes the
    caller counts that do not exist yet at q_norm, taken off that moment.
    Source: transformers 5.17.0 modeling_qwen3_next.py Qwen3NextAttention.forward, Qwen3NextRMSNorm;
    live storages on real CPU bf16 tensors (16 heads of 256, 1,000 tokens: the q_norm moment)."""
    gate = Term(name="output_gate", nbytes=q * dt)
    normed = Term(name="normed", nbytes=hidden)
    at_kernel = Term.group("attention", [*kernel.children, gate])
    at_q_norm = Term.group("attention", [normed, Term(name="q_proj", nbytes=2 * q * dt), gate,
                                         Term(name="q_norm_fp32", nbytes=max(2 * q * 4 - unallocated, 0))])
    at_gating = Term.group("attention", [normed, Term(name="query", nbytes=q * dt), gate,
                                         Term(name="gated_output", nbytes=3 * q * dt)])
    return max(at_kernel, at_q_norm, at_gating, key=lambda term: term.nbytes)


def _attention_kernel_step(spec: ModelSpec, layer: LayerSpec, workload: Inference, step: Step, *,
                           hidden: int, dt: int) -> Term:
    att = attention_of(layer)
    dt_name = compute_dtype(spec, workload)
    b, s, kv = workload.batch_size, step.query_tokens, seen_kv(att, step)
    tp = workload.parallel.tp
    heads, kv_heads = att.num_heads // tp, att.num_kv_heads // tp
    if att.mla is not None:
        q_dim = att.mla.qk_head_dim
        v_dim = att.mla.v_head_dim
        kv_heads = heads
    else:
        q_dim = v_dim = att.head_dim
    q = b * s * heads * q_dim * dt
    k = b * s * kv_heads * q_dim * dt
    v = b * s * kv_heads * v_dim * dt
    out = b * s * heads * v_dim * dt
    if att.mla is not None:
        parts = [Term(name="normed", nbytes=hidden), *_mla_parts(att, b=b, s=s, kv=kv, heads=heads, dt=dt),
                 Term(name="output", nbytes=2 * out)]
    else:
        rotated = q + k if att.rotary else 0        # learned positions / ALiBi: q and k are not rotated
        parts = [Term(name="normed", nbytes=hidden), Term(name="qkv", nbytes=q + k + v),
                 Term(name="rotary_copies", nbytes=rotated), Term(name="output", nbytes=2 * out)]
    grouped = kv_heads < heads
    # transformers' repeat_kv (expand + reshape) copies K and V to every query head; with one KV head
    # (MQA) the reshape is a view and nothing is copied
    full_kv = b * kv * heads * (q_dim + v_dim) * dt if kv_heads > 1 else 0
    masked = step.masked or sliding_masked(att, step)
    # a sliding layer's mask is the forward's own, counted with the layer loop's persistent tensors
    own_mask = 0 if sliding_masked(att, step) and not step.masked and not spec.unused_sliding_mask \
        else b * s * kv
    scores = b * heads * s * kv
    padded = -(-kv // SDPA_MASK_ALIGN) * SDPA_MASK_ALIGN
    eager = runs_eager(spec, workload.attn)
    if alibi_bias(spec) and not eager and workload.attn is AttnImpl.SDPA:
        # the (b, heads, s, kv) ALiBi bias (counted with the layer loop's persistent tensors) sends SDPA to
        # the memory-efficient kernel, which copies it only when kv is not a multiple of 16
        pad_copy = b * heads * s * padded * dt if padded != kv else 0
        parts.append(Term(name="bias_pad", nbytes=pad_copy))
        parts.append(Term(name="softmax_lse", nbytes=b * heads * s * 4))
        return Term.group("attention", parts)
    match workload.attn:
        case _ if eager:
            if grouped:
                parts.append(Term(name="repeat_kv", nbytes=full_kv))
            # (b, heads, s, kv) scores and their softmax temporaries (family recipe); the (b, 1, s, kv) mask
            per_score = eager_bytes_per_score(att, dt_name, previous_probs=spec.keeps_previous_attn_probs)
            parts.append(Term(name="scores", nbytes=scores * per_score))
            if not alibi_bias(spec):
                parts.append(Term(name="mask", nbytes=b * s * kv * dt))
        case AttnImpl.SDPA if masked:
            return _masked_sdpa(hidden=hidden, qkv=q + k + v, rotary=rotated, out=out,
                                repeat=full_kv if grouped else 0,
                                bool_mask=own_mask, additive=b * s * kv * dt,
                                pad_copy=b * s * padded * dt if padded != kv else 0)
        case AttnImpl.SDPA if dt < MATH_ACC_BYTES and grouped and att.sdpa_gqa and sdpa_backend(
                dt_name, q_dim=q_dim, v_dim=v_dim, grouped=grouped, masked=False, enable_gqa=True,
                gpu=step.gpu) == "math":
            # while the kernel runs: the normed input, v and the rotated q and k (rotary's inputs are freed;
            # the output is not made yet)
            inputs = [Term(name="normed", nbytes=hidden),
                      Term(name="qkv", nbytes=v if att.rotary else q + k + v),
                      Term(name="rotary_copies", nbytes=rotated)]
            return Term.group("attention", [*inputs, *_upcast_math_parts(
                b=b, s=s, kv=kv, heads=heads, kv_heads=kv_heads, q_dim=q_dim, v_dim=v_dim)])
        case AttnImpl.SDPA if sdpa_backend(dt_name, q_dim=q_dim, v_dim=v_dim, grouped=grouped,
                                           masked=False, enable_gqa=att.sdpa_gqa, gpu=step.gpu) == "math":
            # K and V repeated to every head (math's repeat_interleave under enable_gqa; a family calling
            # torch SDPA without it broadcasts), then (b, heads, s, kv) fp32 scores beside their softmax
            repeated = b * kv * heads * (q_dim + v_dim) * dt if att.sdpa_gqa else 0
            parts.append(Term(name="repeat_kv", nbytes=repeated))
            parts.append(Term(name="scores", nbytes=scores * 2 * 4))
            parts.append(Term(name="mask", nbytes=s * kv * dt))            # the causal (s, kv) bias
        case _:
            parts.append(Term(name="softmax_lse", nbytes=b * heads * s * 4))   # fp32 log-sum-exp
    return Term.group("attention", parts)


def _upcast_math_parts(*, b: int, s: int, kv: int, heads: int, kv_heads: int, q_dim: int,
                       v_dim: int) -> list[Term]:
    """SDPA's math kernel on fp16/bf16 GQA inputs (no flash or efficient kernel: pre-sm80 GPUs), at the
    larger of its two moments. It upcasts q, k and v to fp32 and scales q (two fp32 q-sized tensors; one
    fp32 K or V copy before the repeat stays alive), repeats K and V to every head in fp32, scales K and
    makes the contiguous Kᵀ the batched matmul reads: at the q·Kᵀ matmul three K-sized and one V-sized
    fp32 tensors beside the fp32 scores; at the causal mask's add (prefill: an fp32 (s, kv) bias) the Kᵀ
    copy is freed and the sum is a second scores tensor.
    Source: torch 2.13 _scaled_dot_product_attention_math (the aten composite the trace's emulation calls),
    live storages on real CPU fp16 tensors (heads 14/32, kv heads 2/8, q 1-512, kv 256-1024): exact."""
    q32 = b * heads * s * q_dim * MATH_ACC_BYTES
    k32, v32 = (b * heads * kv * dim * MATH_ACC_BYTES for dim in (q_dim, v_dim))
    pre_repeat = b * kv_heads * kv * v_dim * MATH_ACC_BYTES
    scores32 = b * heads * s * kv * MATH_ACC_BYTES
    mask32 = s * kv * MATH_ACC_BYTES if s > 1 else 0      # is_causal's (s, kv) float bias
    at_matmul = 3 * k32 + v32 + scores32
    at_mask = 2 * k32 + v32 + 2 * scores32
    repeated, scores = (3 * k32 + v32, scores32) if at_matmul >= at_mask else (2 * k32 + v32, 2 * scores32)
    return [Term(name="upcast_q", nbytes=2 * q32 + pre_repeat), Term(name="repeat_kv", nbytes=repeated),
            Term(name="scores", nbytes=scores), Term(name="mask", nbytes=mask32)]


def _masked_sdpa(*, hidden: int, qkv: int, rotary: int, out: int, repeat: int, bool_mask: int, additive: int,
                 pad_copy: int) -> Term:
    """SDPA with an explicit mask, as the largest of three moments: rotary (q, k, v and their rotated
    copies beside the bool mask), the kernel running (rotated q and k and v, K/V repeated to every head,
    the bool (b, 1, s, kv) mask, its additive copy in the compute dtype and the aligned copy when kv is
    not a multiple of 16, the kernel's output) and just after it (the additive copies freed, the output's
    transposed contiguous copy made). Rotary's inputs are freed once the kernel runs.
    Source: torch convert_boolean_attn_mask / preprocess_mask; transformers 5.17 sdpa_attention_forward;
    trace of gemma-3-270m (b4, 8k prompt: sliding layers masked)."""
    base = [Term(name="normed", nbytes=hidden), Term(name="qkv", nbytes=qkv),
            Term(name="repeat_kv", nbytes=repeat)]
    kernel = Term.group("attention", [*base, Term(name="mask", nbytes=bool_mask + additive + pad_copy),
                                      Term(name="output", nbytes=out)])
    after = Term.group("attention", [*base, Term(name="mask", nbytes=bool_mask),
                                     Term(name="output", nbytes=2 * out)])
    rotating = Term.group("attention", [Term(name="normed", nbytes=hidden), Term(name="qkv", nbytes=qkv),
                                        Term(name="rotary_copies", nbytes=rotary),
                                        Term(name="mask", nbytes=bool_mask)])
    return max(rotating, kernel, after, key=lambda t: t.nbytes)


def _mla_parts(att: AttentionSpec, *, b: int, s: int, kv: int, heads: int, dt: int) -> list[Term]:
    """MLA's attention temporaries: the query, its rotary part and the query_states cat; the compressed
    latent, its norm and rotated shared key; then K and V expanded from the (cached) latent over all `kv`
    tokens: kv_b_proj's (b, kv, heads × (nope + v)) output (V is a view of it) and the new_empty key
    (b, heads, kv, nope + rope).
    Source: transformers 5.17 DeepseekV2Attention.forward / expand_kv (DeepseekV3 alike)."""
    mla = att.mla
    assert mla is not None  # only called for MLA layers
    q = b * s * heads * mla.qk_head_dim * dt
    latent = b * s * (2 * mla.kv_lora_rank + 2 * mla.qk_rope_head_dim) * dt
    expanded = b * kv * heads * (2 * mla.qk_nope_head_dim + mla.v_head_dim + mla.qk_rope_head_dim) * dt
    return [Term(name="query", nbytes=2 * q + b * s * heads * mla.qk_rope_head_dim * dt),
            Term(name="latent", nbytes=latent), Term(name="expanded_kv", nbytes=expanded)]


def grouped_experts_bytes(moe: MoeSpec, *, tokens: int, hidden: int, dt: int) -> int:
    """The routed experts' largest live set under transformers' grouped_mm experts (its default wherever
    torch's grouped_mm dispatches, sm80+): all S = tokens × top_k (token, expert) rows at once, sorted by
    expert. Three moments: the up projection (the gathered rows, its (S, 2I) output and the masked copy),
    the gate (the masked output, activation and product, (S, I) each), the end (the gathered rows, the
    masked down output, the weighted rows and their copy back in token order: four (S, h)). A clamped GLU
    (gpt-oss) holds two more (S, I) temporaries. `hidden` is tokens × h × dt.
    Source: transformers 5.17 integrations/moe.py grouped_mm_experts_forward; trace of Qwen3-30B-A3B,
    Qwen2-57B-A14B (8k-32k prompts)."""
    rows = moe.top_k
    inter = tokens * moe.expert.intermediate_size * dt * rows
    up_width = 2 * inter if moe.expert.gated else inter
    gathered = hidden * rows
    weighted = gathered * 4 // dt if moe.routing_weights_fp32 else gathered   # fp32 weights promote
    gate = gathered + up_width + (4 if moe.expert.clamped_glu else 2) * inter
    return max(gathered + 2 * up_width, gate, 2 * gathered + 2 * weighted)


def dense_dispatch_bytes(moe: MoeSpec, *, hidden: int, inter: int) -> tuple[int, int]:
    """(peak, live after) of dense-dispatch experts (`MoeSpec.dense_dispatch`): every token is repeated to
    all E experts and scaled by its score, so every tensor has E × tokens rows. Moments: the repeat and its
    scaled copy (2 E·h); gate_up (2I), act(gate) and the product (I each) beside the scaled rows; down's
    output beside the scaled rows, gate_up and the product (2h + 3I). The scaled rows and the output stay
    alive while the shared expert runs (`live after`, 2 E·h). `hidden` is tokens × h × dt, `inter` tokens
    × dt (bytes per intermediate feature).
    Source: transformers 5.17 Llama4TextMoe.forward and Llama4TextExperts.forward (repeat, bmm, chunk)."""
    e, i = moe.num_experts, moe.expert.intermediate_size
    up = e * inter * i * (2 if moe.expert.gated else 1)
    act = e * inter * i
    scaled = e * hidden
    peak = max(2 * scaled, scaled + up + 2 * act, 2 * scaled + up + act)
    return peak, 2 * scaled


def _mlp_step(spec: ModelSpec, layer: LayerSpec, workload: Inference, *, tokens: int, hidden: int,
              dt: int, own_residual: bool = True) -> tuple[Term, int]:
    """The MLP step's live set and the dequantisation bytes inside it (own_residual: the mixer's residual
    sum is a new tensor beside the layer input; False: the block's residual is the layer input)."""
    base = [Term(name="residual", nbytes=hidden if own_residual else 0), Term(name="normed", nbytes=hidden),
            Term(name="attention_output",
                 nbytes=hidden if spec.keeps_attention_output and layer.attention is not None else 0)]
    mlp_spec = mlp_of(layer)
    linears = [lin for lin in layer_linears(spec, layer) if lin.role in ("mlp", "shared_experts")]
    dequant = max((dequant_bytes(lin, workload, tokens=tokens, dt=dt) for lin in linears), default=0)
    if isinstance(mlp_spec, MoeSpec):
        moe = mlp_spec
        shared = tokens * moe.shared_expert.intermediate_size * dt if moe.shared_expert else 0
        # router logits in fp32 and the sort of the tokens × top_k (expert, position) pairs (int64)
        router = tokens * moe.num_experts * 4 + 3 * tokens * moe.top_k * 8
        routed = grouped_experts_bytes(moe, tokens=tokens, hidden=hidden, dt=dt)
        # the shared expert's intermediates beside the routed experts' output (after them), or its output
        # beside the routed experts' peak (Qwen2-MoE runs it first)
        if moe.dense_dispatch:
            routed, after = dense_dispatch_bytes(moe, hidden=hidden, inter=tokens * dt)
            shared = max(3 * shared + after - routed, 0) if shared else 0
        elif moe.shared_expert_first:
            routed, shared = routed + (hidden if shared else 0), max(3 * shared - routed, 0)
        else:
            shared = max(3 * shared + hidden - routed, 0) if shared else 0
        parts = [Term(name="router", nbytes=router), Term(name="experts", nbytes=routed),
                 Term(name="shared_experts", nbytes=shared)]
        return Term.group("mlp", [*base, *parts]), dequant
    inter = tokens * mlp_spec.intermediate_size * dt
    fused = any(lin.role == "mlp" and lin.fan_out == 2 * mlp_spec.intermediate_size for lin in linears)
    if fused:
        # one gate_up output (2 × intermediate) chunked into views, then act(gate) and the product
        # Source: transformers Phi3MLP.forward
        live = max(4 * inter, 2 * inter + dequant) - dequant
    elif mlp_spec.gated:
        # gate+act, then up while act lives, then their product: three intermediates; with a dequantised
        # weight W: act + up output + W, or product + W + output
        live = max(3 * inter, 2 * inter + dequant, inter + dequant + hidden) - dequant
    else:
        live = max(non_gated_live(mlp_spec) * inter, inter + dequant + hidden) - dequant
    return Term.group("mlp", [*base, Term(name="intermediates", nbytes=live)]), dequant


def non_gated_live(mlp: MlpSpec) -> int:
    """Intermediate-width tensors alive at once in a non-gated MLP's activation under no_grad: the up
    projection and its fused activation (2), the Python-written GELUs' temporaries, or a family's own
    activation (`mlp.no_grad_live`, BLOOM's GELU: 5)."""
    if mlp.no_grad_live is not None:
        return mlp.no_grad_live
    return PYTHON_ACTIVATION_LIVE.get(mlp.activation, 2)


def dequant_bytes(lin: Linear, workload: Inference, *, tokens: int, dt: int) -> int:
    """Transient bytes a quantized Linear allocates to multiply `tokens` rows (0 for unquantized).

    bnb 4-bit: unless its fused kernel takes the rows (quants.bnb_4bit_fused: a few rows), the whole weight
    is dequantised to its compute dtype (BNB_4BIT_COMPUTE). LLM.int8: the outlier-column weight copies and
    the quantised input, or (many rows) the int8 GEMM's int32 (rows, out) accumulator. Source (LLM.int8
    steps): bitsandbytes 0.50 MatMul8bitLt.forward, int8_linear_matmul, int8_mm_dequant (trace/standins.py
    mirrors them allocation for allocation).
    Source: bitsandbytes matmul_4bit / MatMul4Bit, MatMul8bitLt; groundtruth nf4 and int8 rows.
    """
    n = lin.fan_in * lin.fan_out
    match workload.quant.kind:
        case "bnb-4bit" if lin.is_module and not bnb_4bit_fused(tokens, lin.fan_out, lin.fan_in):
            return BNB_4BIT_COMPUTE.nbytes(n)
        case "bnb-int8" if lin.is_module:
            inputs = INT8_ACTIVATION_BYTES_PER_ELEMENT * tokens * lin.fan_in
            # the outlier side path, or the int8 GEMM's int32 accumulator beside the outlier inputs and the
            # dequantised outlier weight (its fp16 result is the output the caller counts; another compute
            # dtype adds the cast)
            cast = 0 if dt == 2 else 2 * tokens * lin.fan_out
            accumulate = inputs + 2 * n + 4 * tokens * lin.fan_out + cast
            return max(INT8_OUTLIER_BYTES_PER_WEIGHT * n + inputs, accumulate)
        case _:
            return 0


def prefill_step(spec: ModelSpec, workload: Inference, *, kind: KvCache, cache_tokens: int,
                 gpu: Gpu | None = None) -> Step:
    """The prefill forward: the whole prompt at once, over the prompt's keys. A static cache returns all
    its slots, but SDPA without a mask slices them to the prompt (layers whose sliding window is shorter
    than the prompt get a mask of the prompt's length, `_attention_step`); eager keeps every slot behind
    a (b, 1, s, cache) mask. Source: transformers 5.17 integrations/sdpa_attention.py (key[:, :, :q_length]
    when is_causal with no mask), StaticLayer.update; trace of gemma-3-270m and Llama static prefills."""
    s = workload.prompt_tokens
    if kind is KvCache.STATIC and runs_eager(spec, workload.attn):
        return Step(query_tokens=s, kv_tokens=cache_tokens, masked=True, gpu=gpu)
    return Step(query_tokens=s, kv_tokens=s, masked=False, gpu=gpu)


def decode_step(workload: Inference, *, kind: KvCache, cache_tokens: int, gpu: Gpu | None = None) -> Step:
    """One decode forward: one token per sequence over the cache; static caches pass a mask."""
    return Step(query_tokens=1, kv_tokens=cache_tokens, masked=kind is KvCache.STATIC, gpu=gpu)


def input_bytes(workload: Inference, *, generating: bool) -> int:
    """Token ids (int64), attention mask (int64) and generate's growing output ids (bytes)."""
    b = workload.batch_size
    ids = b * workload.prompt_tokens * DType.INT64.nbytes(1)
    if not generating:
        return ids
    out = b * workload.total_tokens * DType.INT64.nbytes(1)
    return 2 * ids + 2 * out
