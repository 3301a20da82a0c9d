"""Optimizer states and the temporaries of each optimizer's step, from the tensors it updates.

`trainable_tensors` lists those tensors: every parameter for full fine-tuning, or peft's LoRA A and B
matrices (on nn.Linear modules, and with all-linear on transformers-5 fused MoE experts and routers).

| optimizer          | states per element                  | step temporaries                             |
|--------------------|-------------------------------------|----------------------------------------------|
| adamw, adam        | exp_avg + exp_avg_sq, param dtype   | foreach: one full copy (`_foreach_sqrt`)      |
| adamw-fused        | same                                | none; a device `step` scalar per tensor       |
| adamw-loop         | same                                | two copies of the largest tensor (sqrt, div) |
| sgd / sgd-momentum | none / momentum buffer              | none (in-place foreach)                       |
| adafactor          | fp32 row + col factors (full 1-D)   | 2-4 fp32 copies of the largest tensor        |
| lion               | exp_avg                             | two copies of the largest tensor             |
| adamw-8bit (bnb)   | 2 uint8 + fp32 absmax / 256 block   | none (in place); < 4096 elements: fp32       |
| paged-adamw-8/32   | as bnb, in CUDA managed memory      | none; tensors < 1e5 elements stay on device  |

Sources: torch/optim/adamw.py (2.11) `_multi_tensor_adamw`, `_single_tensor_adamw`, `_fused_adamw`;
torch/optim/sgd.py; transformers/optimization.py Adafactor (relative_step=False, beta1=None);
lion-pytorch `Lion.step`; bitsandbytes/optim/optimizer.py (0.50) `Optimizer2State.init_state`,
`get_state_buffer`. The foreach copy and fused step scalars are pinned by the groundtruth rows
l1b-full-bf16-adamw (opt2 peak − start = one parameter copy) and l1b-full-bf16-fused (+146 × 512 B).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from memfit.core.choices import Method, NormKind, Optimizer, Precision
from memfit.core.errors import InvalidWorkload
from memfit.core.params import Linear, count_params, layer_linears, lm_head_linear
from memfit.core.result import Term
from memfit.core.spec import LayerSpec, ModelSpec, MoeSpec
from memfit.core.workload import Lora, Training

ALLOCATOR_BLOCK_BYTES = 512
"""The CUDA caching allocator rounds blocks up to 512 bytes. Source: c10/cuda/CUDACachingAllocator.cpp."""
BNB_BLOCK = 256
"""Elements per fp32 absmax of bnb's block-wise 8-bit states. Source: bnb Optimizer2State.init_state."""
BNB_MIN_8BIT_SIZE = 4096
"""Tensors with fewer elements keep fp32 states in bnb 8-bit optimizers (min_8bit_size default)."""
BNB_PAGED_MIN_ELEMENTS = 100_000
"""Tensors with fewer elements get device (not paged) state buffers. Source: bnb get_state_buffer."""
FP32_BYTES = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamTensor:
    """`count` trainable tensors of shape (stack, rows, cols) (cols = 1 for vectors), `element_bytes` each.

    `stack` > 1: transformers-5 fused MoE experts, one 3-D Parameter per layer holding every expert's
    matrix, so per-tensor step temporaries are sized by the whole stack.
    """

    name: str
    rows: int
    cols: int
    element_bytes: int
    count: int = 1
    stack: int = 1

    @property
    def numel(self) -> int:
        return self.stack * self.rows * self.cols

    @property
    def nbytes(self) -> int:
        return self.count * self.numel * self.element_bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class OptimizerMemory:
    """What an optimizer holds (bytes): device states, managed (paged) states, step temporaries."""

    states: Term
    paged_bytes: int
    step_bytes: int
    step_note: str


def _largest(tensors: tuple[ParamTensor, ...]) -> ParamTensor | None:
    return max(tensors, key=lambda t: t.numel * t.element_bytes, default=None)


def _two_state(tensors: tuple[ParamTensor, ...]) -> int:
    return sum(2 * t.nbytes for t in tensors)


def _bnb_states(tensors: tuple[ParamTensor, ...], *, bits: int, paged: bool) -> tuple[int, int]:
    """(device bytes, managed bytes) of a bnb two-state optimizer's state1/state2 and absmax."""
    device = managed = 0
    for t in tensors:
        eight = bits == 8 and t.numel >= BNB_MIN_8BIT_SIZE
        state_bytes = 2 * t.numel * (1 if eight else FP32_BYTES)
        absmax = 2 * FP32_BYTES * -(-t.numel // BNB_BLOCK) if eight else 0
        if paged and t.numel >= BNB_PAGED_MIN_ELEMENTS:
            managed += t.count * state_bytes
        else:
            device += t.count * state_bytes
        device += t.count * absmax
    return device, managed


def _adafactor_states(tensors: tuple[ParamTensor, ...]) -> int:
    """Factored second moments: rows + cols per matrix, a full one for vectors; fp32 (it upcasts grads)."""
    total = 0
    for t in tensors:
        per = t.stack * (t.rows + t.cols) if t.cols > 1 else t.numel
        total += t.count * per * FP32_BYTES
    return total


def optimizer_memory(opt: Optimizer, tensors: tuple[ParamTensor, ...]) -> OptimizerMemory:
    """States and step temporaries of `opt` over the trainable `tensors` (bytes)."""
    big = _largest(tensors)
    big_bytes = big.numel * big.element_bytes if big else 0
    params_bytes = sum(t.nbytes for t in tensors)
    paged = 0
    match opt:
        case Optimizer.ADAMW | Optimizer.ADAM:
            states, step, note = _two_state(tensors), params_bytes, "foreach sqrt(exp_avg_sq): one full copy"
        case Optimizer.ADAMW_FUSED:
            count = sum(t.count for t in tensors)
            states, step, note = _two_state(tensors), 0, "fused kernel: no temporary"
            states += count * ALLOCATOR_BLOCK_BYTES          # one fp32 `step` scalar per tensor on device
        case Optimizer.ADAMW_LOOP:
            states, step, note = _two_state(tensors), 2 * big_bytes, "for-loop: sqrt and div of the largest"
        case Optimizer.SGD:
            states, step, note = 0, 0, "in-place foreach update"
        case Optimizer.SGD_MOMENTUM:
            states, step, note = params_bytes, 0, "in-place foreach update"
        case Optimizer.ADAFACTOR:
            states = _adafactor_states(tensors)
            # per tensor: fp32 grad and param copies (low-precision params), the old and new update
            upcasts = 2 * FP32_BYTES if big and big.element_bytes < FP32_BYTES else 0
            step = big.numel * (2 * FP32_BYTES + upcasts) if big else 0
            note = "per tensor: fp32 param and grad copies, two update buffers"
        case Optimizer.LION:
            states, step, note = params_bytes, 2 * big_bytes, "per tensor: interpolated update and its sign"
        case Optimizer.ADAMW_8BIT:
            states, _ = _bnb_states(tensors, bits=8, paged=False)
            step, note = 0, "in-place 8-bit block-wise kernel"
        case Optimizer.PAGED_ADAMW_8BIT | Optimizer.PAGED_ADAMW_32BIT:
            bits = 8 if opt is Optimizer.PAGED_ADAMW_8BIT else 32
            states, paged = _bnb_states(tensors, bits=bits, paged=True)
            step, note = 0, "in-place kernel; states in CUDA managed memory"
    return OptimizerMemory(
        states=Term.group("optimizer_states", [Term(name="states", nbytes=states)]),
        paged_bytes=paged, step_bytes=step, step_note=note,
    )


# --- what trains: the tensors an optimizer updates ------------------------------------------------------

LORA_PARAM_BYTES = 4
"""peft keeps adapter weights in fp32 (autocast_adapter_dtype=True). Source: peft tuners_utils."""


def _unique_layers(spec: ModelSpec) -> tuple[LayerSpec, ...]:
    return tuple({id(layer): layer for layer in spec.layers}.values())


def param_bytes(wl: Training) -> int:
    """Bytes per trained (full fine-tuning) parameter: fp32 for fp32 and AMP, else 2."""
    return 4 if wl.precision in (Precision.FP32, Precision.AMP_BF16, Precision.AMP_FP16) else 2


def _module_names(spec: ModelSpec) -> list[str]:
    names: list[str] = []
    for layer in _unique_layers(spec):
        for lin in layer_linears(spec, layer):
            if lin.is_module and lin.name not in names:
                names.append(lin.name)
    return names


PEFT_EXPERT_TARGET_NAMES = frozenset({"gate", "gate_proj", "up_proj", "down_proj", "w1", "w2", "w3"})
"""The transformers-4 expert and router names peft moves from target_modules to target_parameters when it
adapts a model's fused experts (the keys of `_MOE_TARGET_MODULE_MAPPING`, "qwen2_moe": gate, gate_proj,
up_proj, down_proj; "mixtral": gate, w1, w2, w3). An nn.Linear with such a leaf name elsewhere in the model
(DeepSeek's shared experts, its first dense layers' MLP) then gets no adapter under all-linear.
Source: peft 0.21.2 utils/transformers_weight_conversion.py `_convert_peft_config_moe`; checked with
get_peft_model on DeepSeek-V2-Lite on the meta device (target_modules = the four attention projections)."""


def lora_targets(spec: ModelSpec, lora: Lora) -> frozenset[str]:
    """Linear names that get an adapter; InvalidWorkload naming the valid ones for unknown names. Under
    all-linear on a model whose fused experts peft adapts, the expert names leave the module targets
    (PEFT_EXPERT_TARGET_NAMES)."""
    names = _module_names(spec)
    if "all-linear" in lora.targets:
        moved = PEFT_EXPERT_TARGET_NAMES if peft_adapts_fused_experts(spec, lora) else frozenset()
        chosen = frozenset(names) - moved
    else:
        valid = [*names, "lm_head"]
        unknown = [t for t in lora.targets if t not in valid]
        if unknown:
            raise InvalidWorkload(f"lora_targets {','.join(unknown)} not in {spec.name}; "
                                  f"use all-linear or some of: {','.join(valid)}")
        chosen = frozenset(lora.targets)
    _refuse_linear_routers(spec, chosen, names)
    return chosen


def _refuse_linear_routers(spec: ModelSpec, chosen: frozenset[str], names: list[str]) -> None:
    """An nn.Linear router (MoeSpec.router_is_linear, Llama4Router) returns (scores, logits): peft wraps it
    like any Linear and lora.Linear.forward then fails on the tuple (peft 0.21, checked on CPU with a tiny
    llama4_text: AttributeError 'tuple' object has no attribute 'dtype'). The job cannot run; say so."""
    routers = {lin.name for _, lin in decoder_linears(spec) if lin.role == "router" and lin.is_module}
    if chosen & routers:
        others = ",".join(n for n in names if n not in routers)
        raise InvalidWorkload(f"LoRA on the router of {spec.name} ({','.join(sorted(routers))}) fails in "
                              "peft: it is an nn.Linear returning a tuple; pass lora_targets without it, "
                              f"e.g. {others}")


def peft_adapts_fused_experts(spec: ModelSpec, lora: Lora) -> bool:
    """Whether peft's all-linear wraps `spec`'s fused expert Parameters (lora.ParamWrapper)."""
    wraps = any(isinstance(layer.mlp, MoeSpec) and layer.mlp.peft_wraps_experts for layer in spec.layers)
    return "all-linear" in lora.targets and wraps and any(
        lin.role == "experts" and not lin.is_module for _, lin in decoder_linears(spec))


def decoder_linears(spec: ModelSpec) -> Iterator[tuple[int, Linear]]:
    """(number of layers sharing it, Linear) for every decoder-layer matrix."""
    counts: dict[int, int] = {}
    for layer in spec.layers:
        counts[id(layer)] = counts.get(id(layer), 0) + 1
    for layer in _unique_layers(spec):
        for lin in layer_linears(spec, layer):
            yield counts[id(layer)], lin


def trainable_tensors(spec: ModelSpec, wl: Training, targets: frozenset[str]) -> tuple[ParamTensor, ...]:
    """The tensors the optimizer updates: every parameter (full) or the LoRA A and B matrices."""
    if wl.method is not Method.FULL and wl.lora is not None:
        r = wl.lora.rank
        out: list[ParamTensor] = []
        head = (1, lm_head_linear(spec)) if "lm_head" in targets else None
        adapts_experts = peft_adapts_fused_experts(spec, wl.lora)
        for layers, lin in [*decoder_linears(spec), *([head] if head else [])]:
            out.extend(_linear_adapters(spec, lin, layers, r, targets=targets, adapts_experts=adapts_experts,
                                        ep=wl.parallel.ep))
        return tuple(out)
    eb = param_bytes(wl)
    h = spec.hidden_size
    width = spec.embedding_dim or h     # OPT-350m: 512-wide token embedding and tied head
    out = [ParamTensor(name="embeddings", rows=spec.vocab_size, cols=width, element_bytes=eb)]
    if not spec.tie_word_embeddings:
        out.append(ParamTensor(name="lm_head", rows=spec.vocab_size, cols=width, element_bytes=eb))
    listed = spec.vocab_size * width * (1 if spec.tie_word_embeddings else 2)
    if spec.learned_positions:          # GPT-2, OPT: a (positions, hidden) matrix, factored by Adafactor
        out.append(ParamTensor(name="position_embeddings", rows=spec.learned_positions, cols=h,
                               element_bytes=eb))
        listed += spec.learned_positions * h
    for layers, lin in decoder_linears(spec):
        # a module's `count` copies are separate tensors; a raw Parameter stacks them into one
        count, stack = (layers * lin.count, 1) if lin.is_module else (layers, lin.count)
        out.append(ParamTensor(name=lin.name, rows=lin.fan_out, cols=lin.fan_in, element_bytes=eb,
                               count=count, stack=stack))
        listed += layers * lin.num_weights
        if lin.bias and stack > 1:      # fused expert bias: one (experts, fan_out) matrix per layer
            out.append(ParamTensor(name=f"{lin.name}.bias", rows=lin.count, cols=lin.fan_out,
                                   element_bytes=eb, count=layers))
        elif lin.bias:
            out.append(ParamTensor(name=f"{lin.name}.bias", rows=lin.fan_out, cols=1, element_bytes=eb,
                                   count=count))
            listed += layers * lin.count * lin.fan_out
    norms = sum(layer.norms_per_layer * (2 if layer.norm is NormKind.LAYER else 1) for layer in spec.layers)
    norms += 1 if spec.final_norm is not None else 0
    out.append(ParamTensor(name="norms", rows=h, cols=1, element_bytes=eb, count=norms))
    rest = count_params(spec).num_params - listed - norms * h
    if rest > 0:
        out.append(ParamTensor(name="other", rows=rest, cols=1, element_bytes=eb))
    return tuple(out)


def fused_param_adapters(spec: ModelSpec, lin: Linear, layers: int, r: int, *,
                         ep: int = 1) -> tuple[ParamTensor, ParamTensor]:
    """peft ParamWrapper's LoRA A and B on fused expert or router Parameter `lin` in `layers` layers; under
    expert parallelism peft wraps each rank's num_experts / ep experts (as the trace builds them)."""
    gate_up = lin.fan_in == spec.hidden_size and any(
        isinstance(layer.mlp, MoeSpec) and layer.mlp.expert.gated for layer in spec.layers)
    local = dataclasses.replace(lin, count=lin.count // ep) if lin.role == "experts" else lin
    return _parameter_adapters(local, layers, r, doubled=gate_up)


def _linear_adapters(spec: ModelSpec, lin: Linear, layers: int, r: int, *, targets: frozenset[str],
                     adapts_experts: bool, ep: int = 1) -> tuple[ParamTensor, ...]:
    """The LoRA A and B tensors of `lin` in `layers` decoder layers (none when it is not adapted); under
    expert parallelism peft wraps each rank's num_experts / ep experts (as the trace builds them)."""
    if not lin.is_module and adapts_experts and lin.role in ("experts", "router"):
        return fused_param_adapters(spec, lin, layers, r, ep=ep)
    if lin.is_module and lin.name in targets:
        n = layers * lin.count
        return (ParamTensor(name=f"{lin.name}.lora_A", rows=r, cols=lin.fan_in,
                            element_bytes=LORA_PARAM_BYTES, count=n),
                ParamTensor(name=f"{lin.name}.lora_B", rows=lin.fan_out, cols=r,
                            element_bytes=LORA_PARAM_BYTES, count=n))
    return ()


def layer_adapters(spec: ModelSpec, wl: Training, layer: LayerSpec, targets: frozenset[str],
                   linears: tuple[Linear, ...] | None = None) -> tuple[ParamTensor, ...]:
    """One decoder layer's LoRA A and B tensors (of `linears`, default all of the layer's Linears)."""
    if wl.method is Method.FULL or wl.lora is None:
        return ()
    adapts_experts = peft_adapts_fused_experts(spec, wl.lora)
    out: list[ParamTensor] = []
    for lin in layer_linears(spec, layer) if linears is None else linears:
        out.extend(_linear_adapters(spec, lin, 1, wl.lora.rank, targets=targets,
                                    adapts_experts=adapts_experts, ep=wl.parallel.ep))
    return tuple(out)


def _parameter_adapters(lin: Linear, layers: int, rank: int, *,
                        doubled: bool) -> tuple[ParamTensor, ParamTensor]:
    """peft ParamWrapper adapters on a raw Parameter: rank × experts rows (twice for fused gate_up).

    Source: peft 0.21 get_peft_model with all-linear on transformers-5 Mixtral/Qwen3-MoE (meta device):
    gate_up_proj (E, 2I, h) gets A (2·E·r, h), B (2I, 2·E·r); down_proj (E, h, I) gets A (E·r, I), B (h, E·r);
    the router (E, h) gets A (r, h), B (E, r).
    """
    width = (2 if doubled else 1) * lin.count * rank if lin.role == "experts" else rank
    eb = LORA_PARAM_BYTES
    a = ParamTensor(name=f"{lin.name}.lora_A", rows=width, cols=lin.fan_in, element_bytes=eb, count=layers)
    b = ParamTensor(name=f"{lin.name}.lora_B", rows=lin.fan_out, cols=width, element_bytes=eb, count=layers)
    return a, b
