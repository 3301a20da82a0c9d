"""Model shapes: what a model *is*, independent of any workload. No family logic lives here.

A `ModelSpec` is built by one family module per HF `model_type` (core/families/) from a config.json.
`layers` is a tuple with one `LayerSpec` per decoder layer (equal layers share one object), so sliding-window
patterns and dense-then-MoE stacks need no special cases: every count is a sum over `spec.layers`.
Family quirks are fields with defaults, never subclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from memfit.core.choices import AttnImpl, EagerScores, NormKind, QkNorm, SoftmaxDtype
from memfit.core.dtypes import DType, Quant
from memfit.core.errors import ConfigError, InvalidWorkload
from memfit.core.vision import VisionSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class MlaSpec:
    """DeepSeek multi-head latent attention (MLA) projection ranks and head dims."""

    q_lora_rank: int | None          # None: q is one dense projection (DeepSeek-V2-Lite)
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


@dataclass(frozen=True, slots=True, kw_only=True)
class AttentionSpec:
    """One attention block. num_kv_heads == num_heads: MHA; 1: MQA; else GQA."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    qkv_bias: bool = False
    out_bias: bool = False
    qk_norm: QkNorm = QkNorm.NONE
    qk_norm_kind: NormKind = NormKind.RMS
    sliding_window: int | None = None     # tokens a query sees on this layer; None: global attention
    chunked: bool = False                 # the window is a chunk: a query sees the keys of its own
                                          # sliding_window-sized block (Llama 4 attention_chunk_size);
                                          # transformers caches and masks it as a sliding window of that
                                          # size (cache_utils LAYER_CLASS_MAP "chunked_attention")
    mla: MlaSpec | None = None
    sinks: bool = False                   # gpt-oss: one learned sink logit per head
    fused_qkv: bool = False               # one qkv Linear (GPT-2, BLOOM, Falcon, Phi-3): same count
    # how the family's code runs it (set by the family mappers; formulas read these, never the family name)
    alibi: bool = False                   # an ALiBi bias is added to the scores (BLOOM; Falcon-RW by config)
    rotary: bool = True                   # q and k are rotated (new tensors); False: learned positions, ALiBi
    sdpa_gqa: bool = True                 # SDPA gets enable_gqa (transformers' sdpa_attention_forward);
                                          # False: the family calls torch SDPA itself, without it (Falcon)
    softcap: bool = False                 # tanh soft-capping of the scores (config attn_logit_softcapping)
    qkv_copies: bool = False              # the fused qkv output is reshaped into fresh q, k, v (BLOOM)
    eager_scores: EagerScores = EagerScores.SOFTMAX_FP32   # what eager attention keeps per score
    softmax_dtype: SoftmaxDtype = SoftmaxDtype.FP32   # the dtype eager attention takes its softmax in
    output_gate: bool = False             # q_proj also writes a per-head gate: q_proj is 2·heads·head_dim
                                          # wide and the output is × sigmoid(gate) (Qwen3NextAttention)

    def __post_init__(self) -> None:
        for name in ("num_heads", "num_kv_heads", "head_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"attention {name}={getattr(self, name)} must be at least 1")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_key_value_heads={self.num_kv_heads} does not divide "
                f"num_attention_heads={self.num_heads}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class MlpSpec:
    """A feed-forward block. gated: gate, up and down projections (SwiGLU/GeGLU); else up and down."""

    intermediate_size: int
    gated: bool
    bias: bool = False
    activation: str = "silu"
    clamped_glu: bool = False             # gpt-oss experts: (clamp(up) + 1)·g·sigmoid(α g), g = clamp(gate)
    no_grad_live: int | None = None       # intermediates alive in a family-written activation (BLOOM's GELU)


@dataclass(frozen=True, slots=True, kw_only=True)
class MoeSpec:
    """A mixture-of-experts block: a router over `num_experts` experts, `top_k` per token; shared experts."""

    num_experts: int
    top_k: int
    expert: MlpSpec
    num_shared_experts: int = 0
    shared_expert: MlpSpec | None = None  # all shared experts as one MLP (DeepSeek, Qwen2-MoE)
    shared_expert_gate: bool = False      # Qwen2-MoE: Linear(hidden, 1) gating the shared expert
    router_bias: bool = False             # gpt-oss
    score_correction_bias: bool = False   # DeepSeek-V3: e_score_correction_bias (num_experts)
    peft_wraps_experts: bool = False      # peft's all-linear adapts the fused 3-D experts (lora.ParamWrapper)
    routing_weights_fp32: bool = False    # top-k weights stay fp32, so the weighted rows are fp32 (DeepSeek)
    shared_expert_first: bool = False     # the shared expert runs before the routed ones (Qwen2-MoE)
    shared_expert_is_mlp: bool = False    # the shared expert is the layer's own `*_mlp` module, counted
                                          # under layers/mlp (Granite-4.0-H shared_mlp)
    router_is_module: bool = False        # the router is an nn.Linear (Jamba `router`), not a raw Parameter:
                                          # bitsandbytes and peft's all-linear see it
    dense_dispatch: bool = False          # every expert runs every token, scaled by a score that is zero
                                          # off its top-k (Llama 4: hidden.repeat(E, 1) and two bmm)
    router_is_linear: bool = False        # the router is an nn.Linear subclass returning (scores, logits)
                                          # (Llama4Router), not a raw Parameter: bitsandbytes leaves it,
                                          # peft's LoRA wraps it and then fails (refused)

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= self.num_experts:
            raise ConfigError(
                f"num_experts_per_tok={self.top_k} must be in 1..num_experts={self.num_experts}"
            )

    @property
    def routed_rows(self) -> int:
        """(token, expert) rows the experts compute per token: top_k, or every expert under dense dispatch."""
        return self.num_experts if self.dense_dispatch else self.top_k


@dataclass(frozen=True, slots=True, kw_only=True)
class MambaSpec:
    """A Mamba-2 (SSD) mixer: in_proj → causal depthwise conv → selective scan → gated RMSNorm → out_proj.

    in_proj writes [gate z (d_inner) | x, B, C (conv_dim) | dt (num_heads)]; the conv runs over x, B and C
    (conv_dim = d_inner + 2·n_groups·d_state channels, conv_kernel taps). The per-sequence state a cache
    keeps: the last conv_kernel inputs of the conv (batch × conv_dim × conv_kernel) and the SSM state
    (batch × num_heads × head_dim × d_state). Source: transformers 5.17 GraniteMoeHybridMambaLayer,
    NemotronHMamba2Mixer (__init__, forward) and cache_utils.LinearAttentionLayer.
    """

    num_heads: int
    head_dim: int
    d_state: int
    n_groups: int
    conv_kernel: int
    chunk_size: int                       # the chunked scan's block length (torch_forward path)
    conv_bias: bool = True
    proj_bias: bool = False               # in_proj and out_proj biases
    out_proj_bias: bool | None = None     # out_proj's own bias when it differs (Falcon-H1 projectors_bias)
    gated_norm: bool = True               # a gated RMSNorm over d_inner; False: y · silu(z) (Falcon-H1)
    mup_scaled: bool = False              # muP: input × ssm_in_multiplier and in_proj's output × a per-layer
                                          # mup_vector buffer, one more copy each (Falcon-H1)

    def __post_init__(self) -> None:
        for name in ("num_heads", "head_dim", "d_state", "n_groups", "conv_kernel", "chunk_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"mamba {name}={getattr(self, name)} must be at least 1")
        if self.num_heads % self.n_groups:
            raise ConfigError(f"mamba n_groups={self.n_groups} does not divide num_heads={self.num_heads}")

    @property
    def d_inner(self) -> int:
        """Width of the scanned stream and of the gate: num_heads × head_dim (expand × hidden_size)."""
        return self.num_heads * self.head_dim

    @property
    def conv_dim(self) -> int:
        """Channels of the causal conv: x, B and C."""
        return self.d_inner + 2 * self.n_groups * self.d_state

    @property
    def in_proj_width(self) -> int:
        """Outputs of in_proj: gate, conv input and one dt per head."""
        return self.d_inner + self.conv_dim + self.num_heads

    @property
    def ssm_state_elements(self) -> int:
        """Elements of one sequence's SSM state: num_heads × head_dim × d_state."""
        return self.num_heads * self.head_dim * self.d_state


@dataclass(frozen=True, slots=True, kw_only=True)
class Mamba1Spec:
    """A Mamba-1 (selective scan) mixer: in_proj → causal depthwise conv → x_proj (dt, B, C) → dt_proj →
    selective scan → out_proj, gated by SiLU(z); Jamba adds RMSNorms over dt, B and C.

    in_proj writes [x | gate z] (d_inner each); the conv runs over x alone; x_proj maps d_inner to
    dt_rank + 2·d_state; dt_proj (dt_rank → d_inner, with bias) expands dt to one step per channel;
    A_log is (d_inner, d_state) and D (d_inner). The per-sequence state a cache keeps: the last
    conv_kernel conv inputs (batch × d_inner × conv_kernel) and the SSM state (batch × d_inner × d_state).
    Source: transformers 5.17 JambaMambaMixer (__init__, forward) and cache_utils.LinearAttentionLayer.
    """

    d_inner: int                          # mamba_expand × hidden_size
    d_state: int
    conv_kernel: int
    dt_rank: int
    conv_bias: bool = True
    proj_bias: bool = False               # in_proj and out_proj biases (dt_proj always has one)
    dt_bc_norms: bool = True              # RMSNorms over dt (dt_rank), B and C (d_state each)

    def __post_init__(self) -> None:
        for name in ("d_inner", "d_state", "conv_kernel", "dt_rank"):
            if getattr(self, name) < 1:
                raise ConfigError(f"mamba {name}={getattr(self, name)} must be at least 1")

    @property
    def conv_dim(self) -> int:
        """Channels of the causal conv: x only."""
        return self.d_inner

    @property
    def in_proj_width(self) -> int:
        """Outputs of in_proj: x and the gate."""
        return 2 * self.d_inner

    @property
    def ssm_state_elements(self) -> int:
        """Elements of one sequence's SSM state: d_inner × d_state."""
        return self.d_inner * self.d_state

    @property
    def x_proj_width(self) -> int:
        """Outputs of x_proj: dt (dt_rank), B and C (d_state each)."""
        return self.dt_rank + 2 * self.d_state


@dataclass(frozen=True, slots=True, kw_only=True)
class GatedDeltaNetSpec:
    """A gated DeltaNet linear-attention mixer (Qwen3-Next `linear_attn`): in_proj_qkvz → causal depthwise
    conv over q, k, v → gated delta rule → gated RMSNorm (per value head, gate z) → out_proj.

    in_proj_qkvz writes [q, k (num_key_heads × key_head_dim each) | v, z (num_value_heads × value_head_dim
    each)]; in_proj_ba writes b and a (one per value head each); the conv (no bias) runs over q, k and v
    (conv_dim = 2·key_dim + value_dim channels, conv_kernel taps); dt_bias and A_log (one per value head);
    the gated RMSNorm's weight is value_head_dim wide (shared by all heads). The per-sequence state a cache
    keeps: the last conv_kernel inputs of the conv (batch × conv_dim × conv_kernel) and the recurrent state
    (batch × num_value_heads × key_head_dim × value_head_dim).
    Source: transformers 5.17 Qwen3NextGatedDeltaNet (__init__, fix_query_key_value_ordering).
    """

    num_key_heads: int
    num_value_heads: int
    key_head_dim: int
    value_head_dim: int
    conv_kernel: int

    def __post_init__(self) -> None:
        for name in ("num_key_heads", "num_value_heads", "key_head_dim", "value_head_dim", "conv_kernel"):
            if getattr(self, name) < 1:
                raise ConfigError(f"linear attention {name}={getattr(self, name)} must be at least 1")
        if self.num_value_heads % self.num_key_heads:
            raise ConfigError(f"linear_num_key_heads={self.num_key_heads} does not divide "
                              f"linear_num_value_heads={self.num_value_heads}")

    @property
    def key_dim(self) -> int:
        """Width of q and of k: num_key_heads × key_head_dim."""
        return self.num_key_heads * self.key_head_dim

    @property
    def value_dim(self) -> int:
        """Width of v, of the gate z and of the mixer's output: num_value_heads × value_head_dim."""
        return self.num_value_heads * self.value_head_dim

    @property
    def conv_dim(self) -> int:
        """Channels of the causal conv: q, k and v."""
        return 2 * self.key_dim + self.value_dim

    @property
    def qkvz_width(self) -> int:
        """Outputs of in_proj_qkvz: q, k, v and the gate z."""
        return 2 * self.key_dim + 2 * self.value_dim

    @property
    def ba_width(self) -> int:
        """Outputs of in_proj_ba: b (the write strength β) and a (the decay's input), one per value head."""
        return 2 * self.num_value_heads

    @property
    def in_proj_width(self) -> int:
        """Outputs of both input projections: in_proj_qkvz and in_proj_ba."""
        return self.qkvz_width + self.ba_width

    @property
    def ssm_state_elements(self) -> int:
        """Elements of one sequence's recurrent state: num_value_heads × key_head_dim × value_head_dim."""
        return self.num_value_heads * self.key_head_dim * self.value_head_dim


MixerSpec = MambaSpec | Mamba1Spec | GatedDeltaNetSpec
"""A recurrent mixer: Mamba-2 (SSD, heads), Mamba-1 (selective scan per channel) or a gated DeltaNet
(Qwen3-Next linear attention)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerSpec:
    """One decoder layer: a token mixer (attention, or a Mamba mixer, or neither) and an MLP (or none).

    Hybrid families set `attention=None` on their state-space layers and give `mamba`; Nemotron-H has
    single-block layers (only a mixer, only an MLP or only an MoE) with one norm each; Falcon-H1 layers
    have both mixers side by side.
    """

    attention: AttentionSpec | None
    mlp: MlpSpec | MoeSpec | None
    norm: NormKind = NormKind.RMS
    norms_per_layer: int = 2              # Gemma 2/3 and OLMo 2 have 4 (pre and post) or 2 post-only
    parallel_block: bool = False          # attention and MLP read the same input (GPT-J, Falcon, Cohere, Phi)
    mamba: MixerSpec | None = None        # a Mamba-2 (Jamba: Mamba-1) mixer instead of attention, or beside
                                          # it on the same normed input (Falcon-H1: mamba, then attention)

    def __post_init__(self) -> None:
        if self.attention is None and self.mamba is None and self.mlp is None:
            raise ConfigError("a layer needs a mixer or an MLP")

    @property
    def is_moe(self) -> bool:
        return isinstance(self.mlp, MoeSpec)


MIXER_NOT_MODELED = ("{name} has Mamba (state-space) or gated DeltaNet layers: memfit models them for "
                     "inference under runtime=transformers on one GPU only; {what} is not modelled yet")
"""The one-line refusal for a formula that models attention-and-MLP layers only."""


def attention_of(layer: LayerSpec, *, what: str = "this job") -> AttentionSpec:
    """`layer.attention` for formulas that model attention layers only; a mixer layer is refused."""
    if layer.attention is None:
        raise InvalidWorkload(MIXER_NOT_MODELED.format(name="this model", what=what))
    return layer.attention


def mlp_of(layer: LayerSpec, *, what: str = "this job") -> MlpSpec | MoeSpec:
    """`layer.mlp` for formulas that model layers with an MLP only; an MLP-less layer is refused."""
    if layer.mlp is None:
        raise InvalidWorkload(MIXER_NOT_MODELED.format(name="this model", what=what))
    return layer.mlp


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleNames:
    """HF module names of a decoder layer's matrices as the family's code builds them; a fused name, when
    set, replaces its parts (LoRA targets and bitsandbytes skipping use these names)."""

    q: str = "q_proj"
    k: str = "k_proj"
    v: str = "v_proj"
    o: str = "o_proj"
    qkv: str = "qkv_proj"            # used when AttentionSpec.fused_qkv
    q_norm: str = "q_norm"
    k_norm: str = "k_norm"
    gate: str = "gate_proj"
    up: str = "up_proj"
    down: str = "down_proj"
    gate_up: str | None = None       # one fused gate+up Linear (Phi-3)
    router: str = "gate"             # MoE router: a raw (num_experts, hidden) Parameter in transformers 5
    experts_gate_up: str = "gate_up_proj"  # fused 3-D expert Parameters (num_experts, 2·I, hidden)
    experts_down: str = "down_proj"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSource:
    """Where a spec came from, and the config.json text that trace and measure rebuild the model from."""

    kind: str                             # catalog | config | folder | safetensors | gguf | hub | meta
    ref: str                              # what the user typed, or the resolved path / repo id
    config_json: str = ""                 # the config.json text as published
    revision: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorInfo:
    """One stored tensor of a checkpoint: name, storage dtype (as the file names it), shape, bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointInfo:
    """What a checkpoint stores, read from safetensors headers or a GGUF file: exact bytes per tensor."""

    format: str                           # safetensors | gguf
    tensors: tuple[TensorInfo, ...]
    quant_method: str | None = None       # config.json quantization_config.quant_method (gptq, awq, fp8, ...)
    file_type: str | None = None          # GGUF general.file_type name, e.g. "Q4_K_M"

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A decoder-only causal LM's shapes, as built by AutoModelForCausalLM from its config."""

    name: str
    family: str                           # HF model_type
    vocab_size: int
    hidden_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    layers: tuple[LayerSpec, ...]
    source: ModelSource
    checkpoint_dtype: DType = DType.BF16
    learned_positions: int = 0            # rows of a learned position table (GPT-2: n_positions; OPT: +2)
    embedding_dim: int | None = None      # token embedding and LM head width when not hidden_size (OPT-350m)
    embedding_norm: NormKind | None = None  # BLOOM's word_embeddings_layernorm
    final_norm: NormKind | None = NormKind.RMS
    lm_head_bias: bool = False
    embedding_multiplier_is_scaled: bool = False  # Gemma: embeddings × sqrt(hidden) (an extra bf16 copy)
    extra_params: tuple[tuple[str, int], ...] = ()  # odd top-level parameters: (component path, count)
    checkpoint: CheckpointInfo | None = None
    final_logit_softcapping: bool = False  # Gemma 2: tanh soft-capping makes extra full-size logits copies
    logits_scaled: bool = False           # Cohere × logit_scale, Granite ÷ logits_scaling: one more copy
    # how the family's code runs (set by the family mappers from their transformers source and the config)
    modules: ModuleNames = ModuleNames()  # HF module names of the decoder layer's matrices
    default_attention: AttnImpl = AttnImpl.SDPA  # what runs when attn_implementation is not passed
    alibi_float_bias: bool = False        # one float (b, heads, s, kv) ALiBi+causal bias, all layers (Falcon)
    keeps_previous_attn_probs: bool = False  # the layer loop keeps each block's outputs (BLOOM, Falcon)
    rotary_buffer: bool = True            # a rotary inv_freq buffer (head_dim / 2 fp32)
    rotary_fraction: Fraction = Fraction(1)  # share of head_dim rotated: cos, sin and inv_freq widths
                                          # (Bamba: partial_rotary_factor 0.5)
    rotary_per_layer_type: bool = False   # one (cos, sin) pair per layer type, sliding and full (Gemma 3)
    unused_sliding_mask: bool = False     # a bool sliding-window mask built for every forward though no
                                          # layer reads it (Qwen2-MoE without use_sliding_window: window 0)
    causal_mask_buffer: bool = False      # a bool (positions²) causal-mask buffer (GPT-BigCode)
    hidden_dropout: bool = False          # dropout > 0 on the residual branches (config)
    attention_dropout: bool = False       # dropout > 0 on the attention probabilities (config)
    keeps_attention_output: bool = False  # the decoder layer keeps its attention block's output referenced
                                          # through the MLP step (Llama4TextDecoderLayer attention_states)
    bnb_skips_layer_linears: bool = False  # decoder Linears subclass nn.Linear: bitsandbytes skips them
    norm_fp32_output: bool = False        # norms multiply their weight in fp32 (Gemma, gpt-oss, OLMo 2)
    norm_in_python: bool = False          # LayerNorm as fp32 Python arithmetic (Cohere)
    stored_quant: Quant | None = None     # the checkpoint's weight format (config.json quantization_config)
    assumptions: tuple[str, ...] = ()     # what a best-effort spec rests on (built on meta)
    vision: VisionSpec | None = None      # a vision-language model's tower (its weights in extra_params)
    images_refused: str = ""              # why images are refused for a checkpoint with a tower memfit does
                                          # not model (Llama 4: the causal LM class does not build it)

    def __post_init__(self) -> None:
        if not self.layers:
            raise ConfigError(f"{self.name}: num_hidden_layers must be at least 1")
        for name in ("vocab_size", "hidden_size", "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{self.name}: {name}={getattr(self, name)} must be at least 1")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def is_moe(self) -> bool:
        return any(layer.is_moe for layer in self.layers)

    @property
    def has_mamba(self) -> bool:
        """Whether any layer is a Mamba (state-space) mixer: a hybrid or pure state-space model."""
        return any(layer.mamba is not None for layer in self.layers)

    @property
    def attention_specs(self) -> tuple[AttentionSpec, ...]:
        """The attention block of every layer that has one, in layer order."""
        return tuple(layer.attention for layer in self.layers if layer.attention is not None)
