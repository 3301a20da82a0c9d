"""Weight bytes per component under a dtype and a quantization format, or as a checkpoint stores them.

`weights(spec, dtype=, quant=, runtime=)` returns the `weights` Term: children `embeddings`,
`position_embeddings`, `layers` (with `attention`, `mlp`, `experts`, `router`, `norms`), `final_norm`,
`lm_head`, `buffers`. `weight_tensor_bytes(...)` lists every tensor's bytes in load order, for the
allocator's segment rounding (overhead.segment_reserved); `weight_tensor_groups(...)` gives the same list
with each run of equal decoder layers computed once (overhead.segment_reserved_repeated).
"""

from __future__ import annotations

import dataclasses
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
from memfit.core.spec import CheckpointInfo, LayerSpec, MambaSpec, ModelSpec

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
    term = weights_tree_groups(weight_tensor_groups(spec, dtype=dtype, quant=quant, runtime=runtime))
    return with_formats(term, quant=quant, dtype=dtype, spec=spec)


def with_formats(term: Term, *, quant: Quant, dtype: DType, spec: ModelSpec) -> Term:
    """The `weights` Term with each component's stored format as its note (quantized formats only): the
    format's name where the loader converts that kind of module, the dtype where it keeps it (a role none
    of whose matrices `_quantizes` converts, such as bitsandbytes' fused 3-D experts, is the dtype)."""
    if not quant.is_quantized:
        return term
    linears = [lin for layer in {id(one): one for one in spec.layers}.values()
               for lin in layer_linears(spec, layer)]
    unconverted = ({lin.role for lin in linears}
                   - {lin.role for lin in linears if _quantizes(quant, lin)})

    def noted(t: Term, role: str) -> Term:
        if t.name == "buffers":
            return t          # rotary inv_freq (fp32), causal-mask buffers: not weights of any format
        if t.name in ("norms", "final_norm", "embedding_norm"):
            fmt = "fp32" if quant.kind == "gguf" else str(dtype)
        elif (quant.targets is not None and role not in quant.targets) or role in unconverted:
            fmt = str(dtype)
        else:
            fmt = str(dtype) if role in quant.keeps else quant.name
        if t.children:
            return Term.group(t.name, [noted(c, c.name) for c in t.children], note=t.note)
        return dataclasses.replace(t, note=t.note or fmt)

    return Term.group(term.name, [c if c.name == "mla_absorbed" else noted(c, c.name) for c in term.children],
                      note=term.note)


def unconverted_experts_note(spec: ModelSpec, quant: Quant, *, kept: str) -> str:
    """"" or the line saying how many expert weights `quant`'s loader leaves unconverted (bitsandbytes
    converts nn.Linear modules only; transformers-5 MoE experts are fused 3-D Parameters), kept in `kept`."""
    counts = {id(layer): 0 for layer in spec.layers}
    for layer in spec.layers:
        counts[id(layer)] += 1
    layers = {id(layer): layer for layer in spec.layers}
    raw = sum(times * lin.num_weights for key, times in counts.items()
              for lin in layer_linears(spec, layers[key])
              if lin.role == "experts" and quant.is_quantized and not _quantizes(quant, lin))
    if not raw:
        return ""
    return (f"{raw:,} fused expert weights of {spec.name} stay unquantized in {kept}: {quant.name} converts "
            "nn.Linear modules only and transformers 5.17 keeps each layer's experts as raw 3-D Parameters "
            "(integrations/bitsandbytes.py replace_with_bnb_linear)")


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


def weight_tensor_groups(spec: ModelSpec, *, dtype: DType, quant: Quant, runtime: Runtime,
                         tp: int = 1, ep: int = 1) -> list[TensorGroup]:
    """`weight_tensor_bytes` in load order as (tensors, times) groups: a run of equal decoder layers (one
    shared LayerSpec object) is one group allocated `times` in a row, computed once.

    With `tp` > 1, each tensor as one tensor-parallel rank holds it: matrices and the (vocab-parallel)
    embeddings and head split tp ways, except what stays whole on every rank (norms, buffers, MoE routers,
    MLA's low-rank q_a / kv_a down-projections) and K/V projections with fewer KV heads than tp (each rank
    keeps one head). Source: vLLM model_executor/models/deepseek_v2.py (ReplicatedLinear q_a_proj,
    kv_a_proj_with_mqa, gate), llama.py (QKVParallelLinear replicates KV heads when tp > num_kv_heads),
    RMSNorm unsharded; transformers' base_model_tp_plan leaves the same modules out.

    With `ep` > 1 (vLLM's --enable-expert-parallel, ep = tp × dp) the routed experts are not sliced by tp:
    each rank holds num_experts / ep whole experts. Source: vllm fused_moe/config.py
    FusedMoEParallelConfig.make (EP mode: tp_size=1 for the experts, ep_size = tp × dp); fused_moe/layer.py
    FusedMoE (local_num_experts = global_num_experts / ep_size, determine_expert_map).
    """
    if _as_stored(spec, quant):
        assert spec.checkpoint is not None
        stored = _checkpoint_tensors(spec.checkpoint, dtype=dtype)
        return [([(path, -(-b // (ep if ep > 1 and _ROUTED_EXPERT.search(tensor.name) else tp)))
                  for tensor, (path, b) in zip(spec.checkpoint.tensors, stored, strict=True)], 1)]
    return _formula_groups(spec, dtype=dtype, quant=quant, runtime=runtime, tp=tp, ep=ep)


_ROUTED_EXPERT = re.compile(r"(?<!shared_)experts\.|_exps\.")
"""A routed expert's stored tensor (mlp.experts.7.down_proj, GGUF ffn_down_exps), not a shared expert's."""


def _as_stored(spec: ModelSpec, quant: Quant) -> bool:
    """Whether the checkpoint's own tensor list gives the weights: a GGUF file, a floating-point checkpoint
    loaded unquantized (converted to the dtype), or a quantized one loaded as stored. A format the loader
    applies (bitsandbytes on a bf16 folder) or a dequantized load follows the shapes instead."""
    if spec.checkpoint is None:
        return False
    if spec.checkpoint.format == "gguf":
        return True
    if spec.stored_quant is None:
        return not quant.is_quantized
    return quant == spec.stored_quant


def _formula_groups(spec: ModelSpec, *, dtype: DType, quant: Quant, runtime: Runtime,
                    tp: int = 1, ep: int = 1) -> list[TensorGroup]:
    h = spec.hidden_size
    gguf = quant.kind == "gguf"
    norm_dtype = NORM_DTYPE_GGUF if gguf else dtype
    outside = dict(non_layer_params(spec))   # counts shared with count_params (params.py)
    width = spec.embedding_dim or h          # OPT-350m embeds (and ties its head) at 512, not hidden 1024
    embed = Linear(name="token_embd", role="embeddings", fan_in=width, fan_out=spec.vocab_size, bias=False)
    head = list(_matrix("embeddings", embed, dtype=dtype, quant=quant, quantize=_quantizes(quant, embed),
                        tp=tp))
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
                                                 more_bits=key[1], tp=tp, ep=ep))
        groups.append((per_layer[key], 1))
        last = key
    tail: list[Tensor] = []
    if outside["final_norm"]:
        tail.append(("final_norm", tensor_bytes(norm_dtype, outside["final_norm"])))
    if not spec.tie_word_embeddings:
        lm_head = lm_head_linear(spec)
        tail.extend(_matrix("lm_head", lm_head, dtype=dtype, quant=quant, quantize=_quantizes(quant, lm_head),
                            gguf_role="output", tp=tp))
    elif spec.lm_head_bias:  # a tied head still owns its bias
        tail.append(("lm_head", tensor_bytes(norm_dtype, spec.vocab_size)))
    tail.extend((path, tensor_bytes(dtype, count)) for path, count in spec.extra_params)
    if not gguf:
        tail.extend(("buffers", size) for size in buffer_bytes(spec))
    groups.append((tail, 1))
    return groups


def per_layer_weights(spec: ModelSpec, *, dtype: DType, quant: Quant,
                      runtime: Runtime) -> tuple[dict[str, int], list[dict[str, int]]]:
    """Weight bytes outside the decoder blocks by component path, and each block's bytes by component
    path ("layers/experts", ...), in layer order (a GGUF or safetensors checkpoint by its tensor names)."""
    groups = weight_tensor_groups(spec, dtype=dtype, quant=quant, runtime=runtime)
    outside: dict[str, int] = {}
    blocks: list[dict[str, int]] = [{} for _ in range(spec.num_layers)]
    if _as_stored(spec, quant):
        assert spec.checkpoint is not None
        for tensor, (path, nbytes) in zip(spec.checkpoint.tensors, groups[0][0], strict=True):
            found = _LAYER_INDEX.search(tensor.name)
            index = int(found.group(2)) if found else -1
            target = blocks[index] if 0 <= index < spec.num_layers else outside
            target[path] = target.get(path, 0) + nbytes
        return outside, blocks
    layer_groups = [(tensors, times) for tensors, times in groups[1:-1]]
    for path, nbytes in (*groups[0][0], *groups[-1][0]):
        outside[path] = outside.get(path, 0) + nbytes
    index = 0
    for tensors, times in layer_groups:
        totals: dict[str, int] = {}
        for path, nbytes in tensors:
            totals[path] = totals.get(path, 0) + nbytes
        for _ in range(times):
            blocks[index] = dict(totals)
            index += 1
    return outside, blocks


_LAYER_INDEX = re.compile(r"(layers|blk|h)\.(\d+)\.")


MUP_VECTOR_DTYPE = DType.FP32
"""Falcon-H1's per-layer mup_vector buffer: torch.ones(1, 1, in_proj width), fp32, never cast by a dtype
load (a non-persistent buffer registered after init). Source: transformers 5.17 FalconH1Model.__init__."""


def buffer_bytes(spec: ModelSpec) -> list[int]:
    """Bytes of each model buffer transformers puts on the GPU: the rotary `inv_freq` (head_dim/2 fp32)
    unless the family has none, GPT-BigCode's bool (max_positions²) causal mask and Falcon-H1's per-layer
    fp32 mup_vector."""
    sizes = [tensor_bytes(MUP_VECTOR_DTYPE, layer.mamba.in_proj_width) for layer in spec.layers
             if isinstance(layer.mamba, MambaSpec) and layer.mamba.mup_scaled]
    if spec.rotary_buffer and spec.attention_specs:   # a pure state-space stack has no head_dim to rotate
        rotary_dim = int(spec.attention_specs[0].head_dim * spec.rotary_fraction)
        sizes.append(tensor_bytes(ROPE_INV_FREQ_DTYPE, rotary_dim // 2))
    if spec.causal_mask_buffer:
        sizes.append(spec.max_position_embeddings ** 2)
    return sizes


def _layer_tensors(spec: ModelSpec, layer: LayerSpec, *, dtype: DType, norm_dtype: DType, quant: Quant,
                   more_bits: bool, tp: int = 1, ep: int = 1) -> Iterator[Tensor]:
    for lin in layer_linears(spec, layer):
        group = lin.role
        role = _GGUF_ROLE_BY_MODULE.get(lin.name, "")
        if lin.role == "experts" and lin.fan_out == spec.hidden_size:
            role = "ffn_down"
        yield from _matrix(f"layers/{group}", lin, dtype=dtype, quant=quant, quantize=_quantizes(quant, lin),
                           gguf_role=f"{role}@more_bits" if role and more_bits else role,
                           tp=ep if ep > 1 and lin.role == "experts" else tp)
    for path, count in layer_non_linear_params(spec, layer):   # counts shared with count_params
        if path == "norms":
            # one tensor per norm module (the allocator sees each); LayerNorm's weight+bias as one here
            for _ in range(layer.norms_per_layer):
                yield "layers/norms", tensor_bytes(norm_dtype, count // layer.norms_per_layer)
        elif count:
            # QK, MLA latent and Mamba gated norms stay in the norm dtype; attention sinks and a Mamba
            # mixer's conv1d, dt_bias, A_log and D are plain parameters
            tensor_dtype = norm_dtype if path.endswith("norm") else dtype
            ways = tp if path == "attention/sinks" else 1      # one sink per head: split with the heads
            yield f"layers/{path.split('/')[0]}", -(-tensor_bytes(tensor_dtype, count) // ways)


def _quantizes(quant: Quant, lin: Linear) -> bool:
    """Whether the loader converts this matrix under `quant` (else it stays in the compute dtype)."""
    if not quant.is_quantized:
        return False
    if not lin.is_module and "fused" in quant.keeps:
        return False      # bnb converts nn.Linear only; fused 3-D expert Parameters stay
    if not lin.bnb_quantizable and quant.kind.startswith("bnb"):
        return False      # bnb converts `type(m) is nn.Linear` only: subclasses (FalconLinear) stay
    if quant.targets is not None and lin.role not in quant.targets:
        return False
    return lin.role not in quant.keeps


def _matrix(path: str, lin: Linear, *, dtype: DType, quant: Quant, quantize: bool,
            gguf_role: str = "", tp: int = 1) -> Iterator[Tensor]:
    """The tensors of one Linear (times lin.count): weight (with quant overheads) and bias, as one of `tp`
    tensor-parallel ranks holds them (see weight_tensor_groups)."""
    ways = tp if lin.tp_split == 0 else min(tp, lin.tp_split)
    if ways > 1:
        yield from ((p, -(-b // ways)) for p, b in _matrix(path, lin, dtype=dtype, quant=quant,
                                                              quantize=quantize, gguf_role=gguf_role))
        return
    n = lin.num_weights
    if not quantize:
        yield path, tensor_bytes(dtype, n)
    else:
        bits = _gguf_type_bits(quant, gguf_role) if quant.kind == "gguf" else quant.bits_per_weight
        yield path, math.ceil(n * bits / 8)
        for grid in quant.grids:   # a checkpoint format's scales, zeros and indices, exactly by shape
            yield path, lin.count * -(-grid.entries_bits(lin.fan_out, lin.fan_in) // 8)
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
