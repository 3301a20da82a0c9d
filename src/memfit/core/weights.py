"""Weight bytes per component under a dtype and a quantization format, or as a checkpoint stores them.

`weights(spec, dtype=, quant=, runtime=)` returns the `weights` Term: children `embeddings`,
`position_embeddings`, `layers` (with `attention`, `mlp`, `experts`, `router`, `norms`), `final_norm`,
`lm_head`, `buffers`. `weight_tensor_bytes(...)` lists every tensor's bytes in load order, for the
allocator's segment rounding (overhead.segment_reserved); `weight_tensor_groups(...)` gives the same list
with each run of equal decoder layers computed once (overhead.segment_reserved_repeated).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from fractions import Fraction

from memfit.core.choices import Runtime
from memfit.core.dtypes import DType, Quant
from memfit.core.params import (
    Linear,
    layer_linears,
    layer_non_linear_params,
    lm_head_linear,
    non_layer_params,
)
from memfit.core.quants import gguf_bits
from memfit.core.result import Term
from memfit.core.spec import CheckpointInfo, LayerSpec, ModelSpec

ROPE_INV_FREQ_DTYPE = DType.FP32
"""Rotary `inv_freq` buffer: head_dim/2 fp32 values. Source: transformers LlamaRotaryEmbedding."""
NORM_DTYPE_GGUF = DType.FP32
"""GGUF stores norm weights and biases as F32. Source: llama.cpp convert_hf_to_gguf (1-D tensors stay F32)."""

_GGUF_ROLE_BY_MODULE = {"v_proj": "attn_v", "down_proj": "ffn_down", "o_proj": "attn_output"}

Tensor = tuple[str, int]
"""(component path below `weights`, bytes) of one stored tensor."""
TensorGroup = tuple[list[Tensor], int]
"""(tensors in load order, times the group is loaded in a row): a run of equal decoder layers."""


def tensor_bytes(dtype: DType, num_elements: int) -> int:
    """Bytes of `num_elements` of `dtype`: DType.nbytes, with an integer fast path for whole-bit types."""
    bits = dtype.bits_per_element
    if bits.denominator == 1:
        return (num_elements * bits.numerator + 7) // 8
    return dtype.nbytes(num_elements)


def weights(spec: ModelSpec, *, dtype: DType, quant: Quant, runtime: Runtime) -> Term:
    """Weights as loaded, by component (bytes).

    Unquantized: every parameter at `dtype`. Quantized: each matrix the loader converts takes
    ceil(weights × quant.bits_per_weight / 8) bytes plus per-row, per-input-feature and per-matrix
    overheads; modules the format keeps (quant.keeps: embeddings, lm_head, norms, routers, biases, fused
    3-D expert Parameters for bitsandbytes) stay at `dtype`. A spec with CheckpointInfo is counted as
    stored (converted to `dtype` only when the checkpoint is plain floating point).
    Source: bitsandbytes replace_with_bnb_linear (nn.Linear only, lm_head skipped); quants.py per format.
    """
    return weights_tree_groups(weight_tensor_groups(spec, dtype=dtype, quant=quant, runtime=runtime))


def weights_tree(tensors: list[Tensor]) -> Term:
    """The `weights` Term summing tensors listed by `weight_tensor_bytes` under their component paths."""
    return weights_tree_groups([(tensors, 1)])


def weights_tree_groups(groups: list[TensorGroup]) -> Term:
    """The `weights` Term summing the tensors of `weight_tensor_groups` (each group × its count)."""
    totals: dict[str, int] = {}
    for tensors, times in groups:
        for path, nbytes in tensors:
            totals[path] = totals.get(path, 0) + nbytes * times
    return _tree("weights", totals)


def weight_tensor_bytes(spec: ModelSpec, *, dtype: DType, quant: Quant, runtime: Runtime) -> list[Tensor]:
    """Every weight tensor's (component path, bytes), in load order."""
    groups = weight_tensor_groups(spec, dtype=dtype, quant=quant, runtime=runtime)
    return [tensor for tensors, times in groups for _ in range(times) for tensor in tensors]


def weight_tensor_groups(spec: ModelSpec, *, dtype: DType, quant: Quant,
                         runtime: Runtime) -> list[TensorGroup]:
    """`weight_tensor_bytes` in load order as (tensors, times) groups: a run of equal decoder layers (one
    shared LayerSpec object) is one group allocated `times` in a row, computed once."""
    if spec.checkpoint is not None:
        return [(list(_checkpoint_tensors(spec.checkpoint, dtype=dtype)), 1)]
    return _formula_groups(spec, dtype=dtype, quant=quant, runtime=runtime)


def _formula_groups(spec: ModelSpec, *, dtype: DType, quant: Quant, runtime: Runtime) -> list[TensorGroup]:
    h = spec.hidden_size
    gguf = quant.kind == "gguf"
    norm_dtype = NORM_DTYPE_GGUF if gguf else dtype
    outside = dict(non_layer_params(spec))   # counts shared with count_params (params.py)
    width = spec.embedding_dim or h          # OPT-350m embeds (and ties its head) at 512, not hidden 1024
    embed = Linear(name="token_embd", role="embeddings", fan_in=width, fan_out=spec.vocab_size, bias=False)
    head = list(_matrix("embeddings", embed, dtype=dtype, quant=quant, quantize=_quantizes(quant, embed)))
    if outside["position_embeddings"]:
        head.append(("position_embeddings", tensor_bytes(dtype, outside["position_embeddings"])))
    if outside["embedding_norm"]:
        head.append(("embedding_norm", tensor_bytes(norm_dtype, outside["embedding_norm"])))
    groups: list[TensorGroup] = [(head, 1)]
    per_layer: dict[tuple[int, bool], list[Tensor]] = {}
    last: tuple[int, bool] | None = None
    for index, layer in enumerate(spec.layers):
        key = (id(layer), gguf and _use_more_bits(index, spec.num_layers))
        if key == last:
            groups[-1] = (groups[-1][0], groups[-1][1] + 1)
            continue
        if key not in per_layer:
            per_layer[key] = list(_layer_tensors(spec, layer, dtype=dtype, norm_dtype=norm_dtype, quant=quant,
                                                 more_bits=key[1]))
        groups.append((per_layer[key], 1))
        last = key
    tail: list[Tensor] = []
    if outside["final_norm"]:
        tail.append(("final_norm", tensor_bytes(norm_dtype, outside["final_norm"])))
    if not spec.tie_word_embeddings:
        lm_head = lm_head_linear(spec)
        tail.extend(_matrix("lm_head", lm_head, dtype=dtype, quant=quant, quantize=_quantizes(quant, lm_head),
                            gguf_role="output"))
    elif spec.lm_head_bias:  # a tied head still owns its bias
        tail.append(("lm_head", tensor_bytes(norm_dtype, spec.vocab_size)))
    tail.extend((path, tensor_bytes(dtype, count)) for path, count in spec.extra_params)
    if not gguf:
        tail.extend(("buffers", size) for size in buffer_bytes(spec))
    groups.append((tail, 1))
    return groups


MUP_VECTOR_DTYPE = DType.FP32
"""Falcon-H1's per-layer mup_vector buffer: torch.ones(1, 1, in_proj width), fp32, never cast by a dtype
load (a non-persistent buffer registered after init). Source: transformers 5.17 FalconH1Model.__init__."""


def buffer_bytes(spec: ModelSpec) -> list[int]:
    """Bytes of each model buffer transformers puts on the GPU: the rotary `inv_freq` (head_dim/2 fp32)
    unless the family has none, GPT-BigCode's bool (max_positions²) causal mask and Falcon-H1's per-layer
    fp32 mup_vector."""
    sizes = [tensor_bytes(MUP_VECTOR_DTYPE, layer.mamba.in_proj_width) for layer in spec.layers
             if layer.mamba is not None and layer.mamba.mup_scaled]
    if spec.rotary_buffer and spec.attention_specs:   # a pure state-space stack has no head_dim to rotate
        rotary_dim = int(spec.attention_specs[0].head_dim * spec.rotary_fraction)
        sizes.append(tensor_bytes(ROPE_INV_FREQ_DTYPE, rotary_dim // 2))
    if spec.causal_mask_buffer:
        sizes.append(spec.max_position_embeddings ** 2)
    return sizes


def _layer_tensors(spec: ModelSpec, layer: LayerSpec, *, dtype: DType, norm_dtype: DType, quant: Quant,
                   more_bits: bool) -> Iterator[Tensor]:
    for lin in layer_linears(spec, layer):
        group = lin.role
        role = _GGUF_ROLE_BY_MODULE.get(lin.name, "")
        if lin.role == "experts" and lin.fan_out == spec.hidden_size:
            role = "ffn_down"
        yield from _matrix(f"layers/{group}", lin, dtype=dtype, quant=quant, quantize=_quantizes(quant, lin),
                           gguf_role=f"{role}@more_bits" if role and more_bits else role)
    for path, count in layer_non_linear_params(spec, layer):   # counts shared with count_params
        if path == "norms":
            # one tensor per norm module (the allocator sees each); LayerNorm's weight+bias as one here
            for _ in range(layer.norms_per_layer):
                yield "layers/norms", tensor_bytes(norm_dtype, count // layer.norms_per_layer)
        elif count:
            # QK, MLA latent and Mamba gated norms stay in the norm dtype; attention sinks and a Mamba
            # mixer's conv1d, dt_bias, A_log and D are plain parameters
            tensor_dtype = norm_dtype if path.endswith("norm") else dtype
            yield f"layers/{path.split('/')[0]}", tensor_bytes(tensor_dtype, count)


def _quantizes(quant: Quant, lin: Linear) -> bool:
    """Whether the loader converts this matrix under `quant` (else it stays in the compute dtype)."""
    if not quant.is_quantized:
        return False
    if not lin.is_module and "fused" in quant.keeps:
        return False      # bnb converts nn.Linear only; fused 3-D expert Parameters stay
    if not lin.bnb_quantizable and quant.kind.startswith("bnb"):
        return False      # bnb converts `type(m) is nn.Linear` only: subclasses (FalconLinear) stay
    return lin.role not in quant.keeps


def _matrix(path: str, lin: Linear, *, dtype: DType, quant: Quant, quantize: bool,
            gguf_role: str = "") -> Iterator[Tensor]:
    """The tensors of one Linear (times lin.count): weight (with quant overheads) and bias."""
    n = lin.num_weights
    if not quantize:
        yield path, tensor_bytes(dtype, n)
    else:
        bits = _gguf_type_bits(quant, gguf_role) if quant.kind == "gguf" else quant.bits_per_weight
        yield path, math.ceil(n * bits / 8)
        for extra_bits in (lin.count * lin.fan_out * quant.row_overhead_bits,
                           lin.count * lin.fan_in * quant.column_overhead_bits,
                           lin.count * quant.tensor_overhead_bits):
            if extra_bits:
                yield path, -(-extra_bits // 8)
    if lin.bias:
        bias_dtype = NORM_DTYPE_GGUF if quant.kind == "gguf" else dtype
        yield path, tensor_bytes(bias_dtype, lin.count * lin.fan_out)


def _gguf_type_bits(quant: Quant, role: str) -> Fraction:
    """Bits of the GGUF type a preset gives a tensor role ("attn_v@more_bits" falls back to "attn_v")."""
    mix = dict(quant.mix)
    for key in (role, role.removesuffix("@more_bits"), "default"):
        if key and key in mix:
            return gguf_bits(mix[key])
    return quant.bits_per_weight


def _use_more_bits(index: int, num_layers: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of layers, and every third layer between.

    Source: llama.cpp src/llama-quant.cpp use_more_bits(i_layer, n_layers).
    """
    return index < num_layers // 8 or index >= 7 * num_layers // 8 or (index - num_layers // 8) % 3 == 2


_CHECKPOINT_TOP = (
    (re.compile(r"(embed_tokens|wte|word_embeddings|token_embd)"), "embeddings"),
    (re.compile(r"(lm_head|^output\.)"), "lm_head"),
)
_CHECKPOINT_LAYER = re.compile(r"(layers\.\d+|blk\.\d+|\.h\.\d+)\.")
_CHECKPOINT_IN_LAYER = (
    (re.compile(r"(layernorm|_norm\.|\.ln_\d)"), "layers/norms"),
    (re.compile(r"(self_attn|attn_|attention|\.attn\.)"), "layers/attention"),
    (re.compile(r"(experts|_exps)"), "layers/experts"),
    (re.compile(r"(mlp|ffn_|feed_forward)"), "layers/mlp"),
)


def _checkpoint_component(name: str) -> str:
    """The weights path of a stored tensor named as in HF safetensors or GGUF files."""
    for pattern, path in _CHECKPOINT_TOP:
        if pattern.search(name):
            return path
    if _CHECKPOINT_LAYER.search(name):
        return next((path for pattern, path in _CHECKPOINT_IN_LAYER if pattern.search(name)), "layers/other")
    return "final_norm" if "norm" in name else "other"


_FLOAT_STORAGE = {"F32", "F16", "BF16", "FLOAT32", "FLOAT16", "BFLOAT16"}


def _checkpoint_tensors(checkpoint: CheckpointInfo, *, dtype: DType) -> Iterator[Tensor]:
    """Stored tensors by component; plain floating-point checkpoints are converted to `dtype`."""
    convert = checkpoint.format != "gguf" and checkpoint.quant_method is None
    for tensor in checkpoint.tensors:
        path = _checkpoint_component(tensor.name)
        if convert and tensor.dtype.upper() in _FLOAT_STORAGE:
            yield path, tensor_bytes(dtype, math.prod(tensor.shape))
        else:
            yield path, tensor.nbytes


def _tree(name: str, totals: dict[str, int]) -> Term:
    heads: dict[str, dict[str, int]] = {}
    leaves: list[Term] = []
    for path, nbytes in totals.items():
        head, _, rest = path.partition("/")
        if rest:
            heads.setdefault(head, {})[rest] = nbytes
        else:
            leaves.append(Term(name=head, nbytes=nbytes))
    children = [*leaves, *(_tree(head, sub) for head, sub in heads.items())]
    order = ["embeddings", "position_embeddings", "embedding_norm", "layers", "final_norm", "lm_head"]
    children.sort(key=lambda t: order.index(t.name) if t.name in order else len(order))
    return Term.group(name, children)
