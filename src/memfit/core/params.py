"""Exact parameter counts per component, and the matrix shapes other formulas share.

`count_params(spec)` returns a `ParamNode` tree rooted at the model's name. Its top-level children are,
in this order and only when non-zero: `embeddings`, `position_embeddings`, `embedding_norm`, `layers`,
`final_norm`, `lm_head`, then any `spec.extra_params` components. `layers` sums every decoder layer into
`attention` (one child per HF module: q_proj ... o_proj, q_norm, k_norm, MLA's q_a_proj ... kv_b_proj,
sinks), `mamba` (a Mamba-2 mixer's in_proj, conv1d, dt_bias, A_log, D, norm, out_proj; a Mamba-1 mixer's
in_proj, x_proj, dt_proj, conv1d, A_log, D, dt/b/c_layernorm, out_proj), `mlp` (gate_proj,
up_proj, down_proj or the family's names), `moe` (router, experts, shared_experts, shared_expert_gate) and
`norms`. A tied LM head counts 0: tied weights count once.

`layer_linears(spec, layer)` lists every matrix of one decoder layer as a `Linear` with its real HF module
name, its role and whether it is a true `nn.Linear`/`Conv1D` (quantizable by bitsandbytes, targeted by
peft's "all-linear") or a raw fused Parameter (transformers 5's 3-D MoE experts and routers).

Source: transformers 5.17.0 modeling files; every count is cross-checked against
`AutoModelForCausalLM.from_config` on the meta device (tests/crosscheck/test_meta_params.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from memfit.core.choices import NormKind, QkNorm
from memfit.core.result import ParamNode
from memfit.core.spec import (
    AttentionSpec,
    GatedDeltaNetSpec,
    LayerSpec,
    Mamba1Spec,
    MixerSpec,
    MlpSpec,
    ModelSpec,
    ModuleNames,
    MoeSpec,
)

TOP_LEVEL = ("embeddings", "position_embeddings", "embedding_norm", "layers", "final_norm", "lm_head")
"""Top-level components of every parameter tree, in order; `spec.extra_params` may add more after them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Linear:
    """One weight matrix (times `count`) of a decoder layer: y = x·Wᵀ (+ b), W of shape (fan_out, fan_in)."""

    name: str        # HF module name: q_proj, c_attn, query_key_value, gate_up_proj, router's "gate", ...
    role: str        # "attention" | "mamba" | "mlp" | "experts" | "shared_experts" | "router" | "lm_head"
    fan_in: int
    fan_out: int
    bias: bool
    count: int = 1   # identical matrices in this layer (num_experts for fused experts)
    is_module: bool = True  # nn.Linear or Conv1D (bnb-quantizable, LoRA-targetable); False: a raw Parameter
    tp_split: int = 0       # most ways tensor parallel splits it: 0 any, 1 replicated (MLA's low-rank
                            # down-projections, routers), n: n KV heads (each rank keeps ≥ 1 head)
    bnb_quantizable: bool = True  # False: a subclass of nn.Linear, which bitsandbytes leaves unconverted

    @property
    def num_weights(self) -> int:
        """Weight elements of all `count` matrices."""
        return self.count * self.fan_in * self.fan_out

    @property
    def num_params(self) -> int:
        """Weights plus biases of all `count` matrices."""
        return self.num_weights + (self.count * self.fan_out if self.bias else 0)


def norm_params(kind: NormKind | None, width: int) -> int:
    """Parameters of one norm over `width` features: weight, plus bias for LayerNorm."""
    if kind is None:
        return 0
    return 2 * width if kind is NormKind.LAYER else width


def _attention_linears(spec: ModelSpec, att: AttentionSpec, names: ModuleNames) -> Iterator[Linear]:
    h = spec.hidden_size
    if att.mla is not None:
        mla = att.mla
        if mla.q_lora_rank is None:
            yield Linear(name="q_proj", role="attention", fan_in=h, fan_out=att.num_heads * mla.qk_head_dim,
                         bias=False)
        else:
            yield Linear(name="q_a_proj", role="attention", fan_in=h, fan_out=mla.q_lora_rank,
                         bias=att.qkv_bias, tp_split=1)
            yield Linear(name="q_b_proj", role="attention", fan_in=mla.q_lora_rank,
                         fan_out=att.num_heads * mla.qk_head_dim, bias=False)
        yield Linear(name="kv_a_proj_with_mqa", role="attention", fan_in=h,
                     fan_out=mla.kv_lora_rank + mla.qk_rope_head_dim, bias=att.qkv_bias, tp_split=1)
        yield Linear(name="kv_b_proj", role="attention", fan_in=mla.kv_lora_rank,
                     fan_out=att.num_heads * (mla.qk_nope_head_dim + mla.v_head_dim), bias=False)
        yield Linear(name=names.o, role="attention", fan_in=att.num_heads * mla.v_head_dim, fan_out=h,
                     bias=att.out_bias)
        return
    q_width = att.num_heads * att.head_dim
    kv_width = att.num_kv_heads * att.head_dim
    q_out = 2 * q_width if att.output_gate else q_width   # the gate rides in q_proj (Qwen3NextAttention)
    if att.fused_qkv:
        yield Linear(name=names.qkv, role="attention", fan_in=h, fan_out=q_out + 2 * kv_width,
                     bias=att.qkv_bias)
    else:
        yield Linear(name=names.q, role="attention", fan_in=h, fan_out=q_out, bias=att.qkv_bias)
        yield Linear(name=names.k, role="attention", fan_in=h, fan_out=kv_width, bias=att.qkv_bias,
                     tp_split=att.num_kv_heads)
        yield Linear(name=names.v, role="attention", fan_in=h, fan_out=kv_width, bias=att.qkv_bias,
                     tp_split=att.num_kv_heads)
    yield Linear(name=names.o, role="attention", fan_in=q_width, fan_out=h, bias=att.out_bias)


def _mlp_linears(h: int, mlp: MlpSpec, names: ModuleNames, *, role: str) -> Iterator[Linear]:
    i = mlp.intermediate_size
    if mlp.gated and names.gate_up is not None:
        yield Linear(name=names.gate_up, role=role, fan_in=h, fan_out=2 * i, bias=mlp.bias)
    elif mlp.gated:
        yield Linear(name=names.gate, role=role, fan_in=h, fan_out=i, bias=mlp.bias)
        yield Linear(name=names.up, role=role, fan_in=h, fan_out=i, bias=mlp.bias)
    else:
        yield Linear(name=names.up, role=role, fan_in=h, fan_out=i, bias=mlp.bias)
    yield Linear(name=names.down, role=role, fan_in=i, fan_out=h, bias=mlp.bias)


def _moe_linears(h: int, moe: MoeSpec, names: ModuleNames) -> Iterator[Linear]:
    # a raw Parameter in transformers 5, or an nn.Linear subclass (Llama4Router) bitsandbytes leaves
    yield Linear(name=names.router, role="router", fan_in=h, fan_out=moe.num_experts, bias=moe.router_bias,
                 is_module=moe.router_is_module or moe.router_is_linear, tp_split=1,
                 bnb_quantizable=not moe.router_is_linear)
    i, e = moe.expert.intermediate_size, moe.num_experts
    # transformers 5 stores all experts as two fused 3-D Parameters: (E, 2·I, h) and (E, h, I)
    up_width = 2 * i if moe.expert.gated else i
    yield Linear(name=names.experts_gate_up if moe.expert.gated else names.up, role="experts", fan_in=h,
                 fan_out=up_width, bias=moe.expert.bias, count=e, is_module=False)
    yield Linear(name=names.experts_down, role="experts", fan_in=i, fan_out=h, bias=moe.expert.bias, count=e,
                 is_module=False)
    if moe.shared_expert is not None:
        yield from _mlp_linears(h, moe.shared_expert, names, role="shared_experts")
    if moe.shared_expert_gate:
        # an nn.Linear(h, 1): bitsandbytes quantizes it and peft's all-linear targets it, unlike the router
        yield Linear(name="shared_expert_gate", role="shared_experts", fan_in=h, fan_out=1, bias=False,
                     tp_split=1)


def _mamba_linears(h: int, mamba: MixerSpec) -> Iterator[Linear]:
    """in_proj (hidden → gate, x, B, C, dt) and out_proj (d_inner → hidden); Mamba-1 adds x_proj
    (d_inner → dt, B, C) and dt_proj (dt_rank → d_inner, with bias). The depthwise conv1d is no Linear (its
    weight is counted in layer_non_linear_params). Source: transformers 5.17 GraniteMoeHybridMambaLayer,
    NemotronHMamba2Mixer and JambaMambaMixer (__init__). A gated DeltaNet has in_proj_qkvz (hidden → q, k,
    v, z), in_proj_ba (hidden → b, a) and out_proj (value_dim → hidden), none with a bias
    (Qwen3NextGatedDeltaNet)."""
    if isinstance(mamba, GatedDeltaNetSpec):
        yield Linear(name="in_proj_qkvz", role="mamba", fan_in=h, fan_out=mamba.qkvz_width, bias=False)
        yield Linear(name="in_proj_ba", role="mamba", fan_in=h, fan_out=mamba.ba_width, bias=False)
        yield Linear(name="out_proj", role="mamba", fan_in=mamba.value_dim, fan_out=h, bias=False)
        return
    yield Linear(name="in_proj", role="mamba", fan_in=h, fan_out=mamba.in_proj_width, bias=mamba.proj_bias)
    if isinstance(mamba, Mamba1Spec):
        yield Linear(name="x_proj", role="mamba", fan_in=mamba.d_inner, fan_out=mamba.x_proj_width,
                     bias=False)
        yield Linear(name="dt_proj", role="mamba", fan_in=mamba.dt_rank, fan_out=mamba.d_inner, bias=True)
        out_bias = mamba.proj_bias
    else:
        out_bias = mamba.proj_bias if mamba.out_proj_bias is None else mamba.out_proj_bias
    yield Linear(name="out_proj", role="mamba", fan_in=mamba.d_inner, fan_out=h, bias=out_bias)


def layer_linears(spec: ModelSpec, layer: LayerSpec) -> tuple[Linear, ...]:
    """Every weight matrix of one decoder layer, with HF module names, roles and fused-ness."""
    names = spec.modules
    mixer: tuple[Linear, ...] = ()
    if layer.attention is not None:
        mixer = tuple(_attention_linears(spec, layer.attention, names))
    if layer.mamba is not None:
        mixer = (*mixer, *_mamba_linears(spec.hidden_size, layer.mamba))
    if isinstance(layer.mlp, MoeSpec):
        linears = (*mixer, *_moe_linears(spec.hidden_size, layer.mlp, names))
    elif layer.mlp is not None:
        linears = (*mixer, *_mlp_linears(spec.hidden_size, layer.mlp, names, role="mlp"))
    else:
        linears = mixer
    if spec.bnb_skips_layer_linears:  # nn.Linear subclasses (FalconLinear): bitsandbytes leaves them
        return tuple(replace(lin, bnb_quantizable=False) if lin.is_module else lin for lin in linears)
    return linears


def lm_head_linear(spec: ModelSpec) -> Linear:
    """The output projection (hidden → vocab); counted in `lm_head` only when untied."""
    return Linear(name="lm_head", role="lm_head", fan_in=spec.embedding_dim or spec.hidden_size,
                  fan_out=spec.vocab_size,
                  bias=spec.lm_head_bias)


def _qk_norm_params(att: AttentionSpec, names: ModuleNames) -> tuple[tuple[str, int], ...]:
    match att.qk_norm:
        case QkNorm.NONE | QkNorm.L2:  # L2: no weight (Llama4TextL2Norm)
            return ()
        case QkNorm.PER_HEAD:  # one norm over head_dim shared by all heads (Qwen3, Gemma 3)
            q_width = k_width = att.head_dim
        case QkNorm.FULL:      # a weight per head and feature (OLMo 2 over all heads, Cohere per head)
            q_width, k_width = att.num_heads * att.head_dim, att.num_kv_heads * att.head_dim
    kind = att.qk_norm_kind
    return ((names.q_norm, norm_params(kind, q_width)), (names.k_norm, norm_params(kind, k_width)))


def layer_non_linear_params(spec: ModelSpec, layer: LayerSpec) -> tuple[tuple[str, int], ...]:
    """(path below `layers`, count) of one layer's parameters outside its Linears: QK norms, MLA latent
    norms, attention sinks and the layer norms. Norms are kept in the compute dtype by quantizers. A Mamba
    mixer adds its depthwise conv1d (conv_dim × conv_kernel weights, conv_dim biases), dt_bias, A_log and D
    (one per head) and the gated RMSNorm over d_inner."""
    att = layer.attention
    out: list[tuple[str, int]] = []
    if att is not None:
        out.extend((f"attention/{name}", n) for name, n in _qk_norm_params(att, spec.modules))
        if att.mla is not None:
            if att.mla.q_lora_rank is not None:
                out.append(("attention/q_a_layernorm", att.mla.q_lora_rank))
            out.append(("attention/kv_a_layernorm", att.mla.kv_lora_rank))
        if att.sinks:
            out.append(("attention/sinks", att.num_heads))
    if layer.mamba is not None:
        out.extend(_mamba_non_linear_params(layer.mamba))
    # DeepSeek-V3's e_score_correction_bias is a buffer, not a parameter: not counted here
    out.append(("norms", layer.norms_per_layer * norm_params(layer.norm, spec.hidden_size)))
    return tuple(out)


def _mamba_non_linear_params(mamba: MixerSpec) -> tuple[tuple[str, int], ...]:
    if isinstance(mamba, GatedDeltaNetSpec):
        # conv1d without bias; dt_bias and A_log per value head; the gated RMSNorm over one value head
        # (Qwen3NextGatedDeltaNet.__init__, Qwen3NextRMSNormGated(head_v_dim))
        heads = mamba.num_value_heads
        return (("mamba/conv1d", mamba.conv_dim * mamba.conv_kernel), ("mamba/dt_bias", heads),
                ("mamba/A_log", heads), ("mamba/norm", mamba.value_head_dim))
    conv = mamba.conv_dim * mamba.conv_kernel + (mamba.conv_dim if mamba.conv_bias else 0)
    if isinstance(mamba, Mamba1Spec):
        # A_log (d_inner, d_state), D (d_inner); Jamba's dt, B and C RMSNorms (JambaMambaMixer.__init__)
        norms = (("mamba/dt_layernorm", mamba.dt_rank), ("mamba/b_layernorm", mamba.d_state),
                 ("mamba/c_layernorm", mamba.d_state)) if mamba.dt_bc_norms else ()
        return (("mamba/conv1d", conv), ("mamba/A_log", mamba.d_inner * mamba.d_state),
                ("mamba/D", mamba.d_inner), *norms)
    return (("mamba/conv1d", conv), ("mamba/dt_bias", mamba.num_heads), ("mamba/A_log", mamba.num_heads),
            ("mamba/D", mamba.num_heads), ("mamba/norm", mamba.d_inner if mamba.gated_norm else 0))


def _layer_components(spec: ModelSpec, layer: LayerSpec) -> list[tuple[tuple[str, ...], int]]:
    """(path below `layers`, count) for every parameter group of one layer."""
    out: list[tuple[tuple[str, ...], int]] = []
    shared_is_mlp = isinstance(layer.mlp, MoeSpec) and layer.mlp.shared_expert_is_mlp
    for lin in layer_linears(spec, layer):
        match lin.role:
            case "attention" | "mlp" | "mamba":
                out.append(((lin.role, lin.name), lin.num_params))
            case "shared_experts" if shared_is_mlp:
                out.append((("mlp", lin.name), lin.num_params))
            case "shared_experts" if lin.name == "shared_expert_gate":
                out.append((("moe", lin.name), lin.num_params))
            case "router":
                out.append((("moe", "router"), lin.num_params))
            case _:
                out.append((("moe", lin.role, lin.name), lin.num_params))
    out.extend((tuple(path.split("/")), n) for path, n in layer_non_linear_params(spec, layer))
    return out


def _tree(name: str, counts: dict[tuple[str, ...], int]) -> ParamNode:
    """A ParamNode named `name` from {path: count}, children in first-seen order."""
    leaf = counts.get((), 0)
    heads: dict[str, dict[tuple[str, ...], int]] = {}
    for path, n in counts.items():
        if path:
            heads.setdefault(path[0], {})[path[1:]] = n
    if not heads:
        return ParamNode(name=name, num_params=leaf)
    return ParamNode.group(name, [_tree(child, sub) for child, sub in heads.items()])


def layers_params(spec: ModelSpec) -> ParamNode:
    """The `layers` node: every decoder layer's components, summed over layers."""
    distinct: dict[int, LayerSpec] = {}
    times: dict[int, int] = {}
    for layer in spec.layers:  # equal layers share one object: each distinct object is counted once
        distinct.setdefault(id(layer), layer)
        times[id(layer)] = times.get(id(layer), 0) + 1
    totals: dict[tuple[str, ...], int] = {}
    for key, layer in distinct.items():
        for path, n in _layer_components(spec, layer):
            totals[path] = totals.get(path, 0) + n * times[key]
    return _tree("layers", totals)


def non_layer_params(spec: ModelSpec) -> tuple[tuple[str, int], ...]:
    """(top-level component, count) for everything outside the decoder layers, in tree order."""
    h = spec.hidden_size
    width = spec.embedding_dim or h
    untied_head = 0 if spec.tie_word_embeddings else spec.vocab_size * width
    head_bias = spec.vocab_size if spec.lm_head_bias else 0
    return (
        ("embeddings", spec.vocab_size * width),
        ("position_embeddings", spec.learned_positions * h),
        ("embedding_norm", norm_params(spec.embedding_norm, h)),
        ("final_norm", norm_params(spec.final_norm, h)),
        ("lm_head", untied_head + head_bias),
        *spec.extra_params,
    )


def count_params(spec: ModelSpec) -> ParamNode:
    """Exact parameter counts of `spec` by component; zero-count components are dropped.

    Source: transformers 5.17.0 `AutoModelForCausalLM.from_config(...)` built on the meta device, counted
    with `named_parameters()` (tied weights once); see tests/crosscheck/test_meta_params.py.
    """
    counts: dict[tuple[str, ...], int] = {}
    for path, n in non_layer_params(spec):
        key = tuple(path.split("/"))
        counts[key] = counts.get(key, 0) + n
    outside = _tree(spec.name, counts)
    by_name = {node.name: node for node in outside.children}
    ordered = [by_name.get(name) for name in TOP_LEVEL if name != "layers"]
    nodes = [node for node in ordered if node is not None]
    nodes.insert(sum(1 for name in TOP_LEVEL[:3] if name in by_name), layers_params(spec))
    nodes.extend(node for node in outside.children if node.name not in TOP_LEVEL)
    return ParamNode.group(spec.name, nodes)
