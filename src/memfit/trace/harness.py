"""One harness for trace and measure: build the model, apply the method, run the phases through a Probe.

Trace builds on the meta device and turns parameters into FakeTensors on cuda:0 (`materialize`); measure
builds on the real GPU. Both then run `run_workload`, which mirrors the ground-truth recipe
(../shared/groundtruth/README.md): prefill `model(input_ids, use_cache=True)` under no_grad; generation as
`generate()` does it (a loop reproducing its cache and logits handling; measure may call `generate()`);
training two steps of forward with labels, backward, optimizer step, zero_grad(set_to_none=True).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from memfit.core.choices import AttnImpl, Checkpointing, KvCache, Method, Optimizer, Precision
from memfit.core.dtypes import DType
from memfit.core.errors import EngineUnavailable
from memfit.core.workload import Inference, Training
from memfit.trace import patches
from memfit.trace.meta import legacy_fields

LEARNING_RATE = 1e-4
"""Any positive learning rate: memory does not depend on it."""

ATTN_IMPLEMENTATION: dict[AttnImpl, str | None] = {AttnImpl.SDPA: None, AttnImpl.EAGER: "eager"}
"""attn_implementation per AttnImpl; SDPA passes None: transformers' default, SDPA wherever the model
supports it (eager for the others, e.g. BLOOM), as the ground truth ran."""
TORCH_DTYPE = {DType.BF16: torch.bfloat16, DType.FP16: torch.float16, DType.FP32: torch.float32}


class Probe(Protocol):
    """What the harness reports to: trace's tracker or measure's CUDA probe."""

    def phase(self, name: str) -> contextlib.AbstractContextManager[Any]: ...

    def mark(self, role: str, tensors: Iterable[torch.Tensor | None]) -> None: ...


class NullProbe:
    """A probe that records nothing (tests, warm-up)."""

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield

    def mark(self, role: str, tensors: Iterable[torch.Tensor | None]) -> None:
        return None


# --- building ---------------------------------------------------------------------------------------------

def hf_config(config_json: str) -> Any:
    """A transformers config from config.json text; remote code is refused (trace would execute it).

    A config naming remote code (`auto_map`) for a model_type transformers has built in uses the built-in
    class, as transformers does without trust_remote_code.
    """
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    data = json.loads(config_json)
    model_type = data.pop("model_type", None)
    if "auto_map" in data and model_type not in CONFIG_MAPPING:
        raise EngineUnavailable("this model needs remote code, which the trace engine does not run; "
                                "use engine=analytic")
    data.pop("auto_map", None)
    try:
        return AutoConfig.for_model(model_type, **legacy_fields(str(model_type), data))
    except (ValueError, KeyError) as err:
        raise EngineUnavailable(f"transformers cannot build model_type={model_type!r}; use engine=analytic") \
            from err


def model_dtype(workload: Inference | Training, checkpoint_dtype: DType) -> torch.dtype:
    """The dtype parameters are built in: the inference dtype, or fp32 for AMP and fp32 training."""
    if isinstance(workload, Inference):
        wanted = workload.dtype or checkpoint_dtype
    elif workload.precision.is_amp or workload.precision is Precision.FP32:
        wanted = DType.FP32
    else:
        wanted = DType(workload.precision.value)
    if wanted not in TORCH_DTYPE:
        raise EngineUnavailable(f"dtype={wanted} is not traced; use bf16, fp16 or fp32, or engine=analytic")
    return TORCH_DTYPE[wanted]


def autocast_dtype(workload: Inference | Training) -> torch.dtype | None:
    """The autocast dtype for AMP training, else None."""
    if isinstance(workload, Training) and workload.precision.is_amp:
        return torch.bfloat16 if workload.precision is Precision.AMP_BF16 else torch.float16
    return None


def attn_implementation(workload: Inference | Training) -> str | None:
    if workload.attn not in ATTN_IMPLEMENTATION:
        raise EngineUnavailable(f"attn={workload.attn} needs the flash-attn package, which trace does not "
                                "emulate; use attn=sdpa or engine=analytic")
    return ATTN_IMPLEMENTATION[workload.attn]


def build_model(config_json: str, workload: Inference | Training, checkpoint_dtype: DType,
                device: str | torch.device, *, prepare: Callable[[Any], Any] | None = None) -> Any:
    """`AutoModelForCausalLM.from_config` under `device` (meta for trace), with LoRA and checkpointing.

    `prepare` runs between the build and the method (trace: bitsandbytes stand-ins, kbit preparation).
    """
    from memfit.trace.meta import auto_class

    cfg = hf_config(config_json)
    with torch.device(device):
        model = auto_class(cfg.model_type).from_config(
            cfg, dtype=model_dtype(workload, checkpoint_dtype),
            attn_implementation=attn_implementation(workload))
    if prepare is not None:
        model = prepare(model)
    return apply_method(model, workload)


def apply_method(model: Any, workload: Inference | Training) -> Any:
    """Checkpointing (non-reentrant) and LoRA as the ground-truth recipe applies them."""
    if not isinstance(workload, Training):
        return model.eval()
    if workload.checkpointing is Checkpointing.FULL:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if workload.method is not Method.FULL:
        model = add_lora(model, workload)
    return model.train()


def add_lora(model: Any, workload: Training) -> Any:
    """peft LoraConfig(r, lora_alpha, lora_dropout, target_modules or "all-linear", task_type CAUSAL_LM)."""
    from peft import LoraConfig, get_peft_model

    lora = workload.lora
    assert lora is not None  # Training.__post_init__ guarantees it for LoRA and QLoRA
    targets: Any = "all-linear" if "all-linear" in lora.targets else list(lora.targets)
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=float(lora.rate),
                        target_modules=targets, task_type="CAUSAL_LM")
    from memfit.trace import standins

    if any(isinstance(m, (standins.Linear4bitStandIn, standins.Linear8bitStandIn)) for m in model.modules()):
        config._register_custom_module(standins.lora_custom_modules())
    return get_peft_model(model, config)


def materialize(model: Any, device: str) -> None:
    """Replace every meta parameter and buffer by an uninitialised tensor on `device` (fake under trace).

    Memoised by the meta tensor, so tied weights (embeddings and LM head) stay one tensor.
    """
    made: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None or param.device.type != "meta":
                continue
            if id(param) not in made:
                data = torch.empty_strided(param.shape, param.stride(), dtype=param.dtype, device=device)
                made[id(param)] = torch.nn.Parameter(data, requires_grad=param.requires_grad)
            module._parameters[name] = made[id(param)]
        for name, buffer in list(module._buffers.items()):
            if buffer is None or buffer.device.type != "meta":
                continue
            if id(buffer) not in made:
                made[id(buffer)] = torch.empty_strided(buffer.shape, buffer.stride(), dtype=buffer.dtype,
                                                       device=device)
            module._buffers[name] = made[id(buffer)]


def mark_weights(model: Any, probe: Probe) -> None:
    """Tag parameters: LoRA matrices as adapters, the rest as weights."""
    for name, param in model.named_parameters(remove_duplicate=True):
        probe.mark("adapters" if "lora_" in name else "weights", [param])
    probe.mark("weights", list(model.buffers()))


# --- optimizers -------------------------------------------------------------------------------------------

def make_optimizer(params: list[torch.nn.Parameter], optimizer: Optimizer, *, real_bnb: bool = False) -> Any:
    """The optimizer with foreach/fused explicit, as CUDA picks them (torch does not on fake tensors).

    bitsandbytes optimizers: the real ones with `real_bnb` (measure), else stand-ins with their storage.
    """
    lr = LEARNING_RATE
    params = _foreach_groups(params)
    match optimizer:
        case Optimizer.ADAMW:
            return torch.optim.AdamW(params, lr=lr, foreach=True)
        case Optimizer.ADAMW_FUSED:
            return torch.optim.AdamW(params, lr=lr, fused=True)
        case Optimizer.ADAMW_LOOP:
            return torch.optim.AdamW(params, lr=lr, foreach=False)
        case Optimizer.ADAM:
            return torch.optim.Adam(params, lr=lr, foreach=True)
        case Optimizer.SGD:
            return torch.optim.SGD(params, lr=lr, foreach=True)
        case Optimizer.SGD_MOMENTUM:
            return torch.optim.SGD(params, lr=lr, momentum=0.9, foreach=True)
        case Optimizer.ADAFACTOR:
            from transformers.optimization import Adafactor

            return Adafactor(  # type: ignore[no-untyped-call]
                params, lr=lr, relative_step=False, scale_parameter=False, warmup_init=False)
        case Optimizer.ADAMW_8BIT | Optimizer.PAGED_ADAMW_8BIT | Optimizer.PAGED_ADAMW_32BIT if real_bnb:
            import bitsandbytes as bnb

            cls = {Optimizer.ADAMW_8BIT: bnb.optim.AdamW8bit,
                   Optimizer.PAGED_ADAMW_8BIT: bnb.optim.PagedAdamW8bit,
                   Optimizer.PAGED_ADAMW_32BIT: bnb.optim.PagedAdamW32bit}[optimizer]
            return cls(params, lr=lr)
        case Optimizer.ADAMW_8BIT | Optimizer.PAGED_ADAMW_8BIT | Optimizer.PAGED_ADAMW_32BIT:
            from memfit.trace.standins import BnbAdamWStandIn

            return BnbAdamWStandIn(params, optimizer=optimizer, lr=lr)
    raise EngineUnavailable(f"optimizer={optimizer} is not traced; use engine=analytic")


def _foreach_groups(params: list[torch.nn.Parameter]) -> Any:
    """The parameters, or two param groups when some are DTensors and some plain tensors (tensor
    parallelism leaves norms unsplit): a foreach step cannot mix them in one list, on a GPU either."""
    split = [p for p in params if hasattr(p, "_local_tensor")]
    if not split or len(split) == len(params):
        return params
    return [{"params": split}, {"params": [p for p in params if not hasattr(p, "_local_tensor")]}]


def host_step_counters(opt: Any) -> list[torch.Tensor]:
    """The `step` counters torch keeps on the CPU (foreach and for-loop, not capturable, not fused): on a
    CPU-fallback trace they would look like device tensors."""
    if not isinstance(opt, torch.optim.Optimizer) or opt.defaults.get("fused") or \
            opt.defaults.get("capturable"):
        return []
    return [state["step"] for state in opt.state.values() if isinstance(state.get("step"), torch.Tensor)]


def optimizer_tensors(opt: Any) -> list[torch.Tensor]:
    """Every tensor held in the optimizer's state."""
    out: list[torch.Tensor] = []
    for state in opt.state.values():
        out.extend(v for v in state.values() if isinstance(v, torch.Tensor))
    return out


# --- running ----------------------------------------------------------------------------------------------

def random_ids(vocab_size: int, batch: int, length: int, device: str | torch.device) -> torch.Tensor:
    return torch.randint(0, vocab_size, (batch, length), device=device)


def run_training(model: Any, workload: Training, probe: Probe, device: str, *, steps: int = 2,
                 real_bnb: bool = False) -> Any:
    """`steps` steps of forward with labels (HF loss), backward, optimizer step, zero_grad(set_to_none).

    Returns the optimizer, so the caller decides when its states die.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, workload.optimizer, real_bnb=real_bnb)
    ids = random_ids(model.config.vocab_size, workload.batch_size, workload.seq_len, device)
    amp = autocast_dtype(workload)
    autocast = (lambda: torch.autocast(device.split(":")[0], dtype=amp)) if amp else contextlib.nullcontext
    # with gradient accumulation the second micro-batch runs with the first one's gradients alive; every
    # later one repeats it, so two micro-batches cover the step's memory
    micro_batches = min(workload.grad_accum, 2)
    for _ in range(steps):
        for _ in range(micro_batches):
            with probe.phase("forward"), autocast():
                loss = model(input_ids=ids, labels=ids).loss
            with probe.phase("backward"):
                loss.backward()
                probe.mark("gradients", [p.grad for p in params])
            del loss
        with probe.phase("optimizer"):
            opt.step()
            probe.mark("host", host_step_counters(opt))
            probe.mark("optimizer_states", optimizer_tensors(opt))
            opt.zero_grad(set_to_none=True)
    return opt


@dataclass(frozen=True)
class ImageBatch:
    """A job's images as the model takes them: `tokens` placeholder ids (`token_id`) per sequence, already
    counted in the workload's prompt, and one pixel_values tensor of `pixel_shape` in the model's dtype
    (the processor's output moved with `.to(model.device, dtype=model.dtype)`, as the model cards do)."""

    token_id: int
    tokens: int
    pixel_shape: tuple[int, ...]


def prompt_inputs(model: Any, workload: Inference, device: str,
                  images: ImageBatch | None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The prompt's input ids and, with images, the pixel_values keyword: the image placeholders first
    (their position in the prompt does not change memory), then random text ids."""
    vocab = model.config.get_text_config().vocab_size   # multimodal configs keep it in text_config
    ids = random_ids(vocab, workload.batch_size, workload.prompt_tokens, device)
    if images is None:
        return ids, {}
    # the model checks placeholders against features with a data-dependent sum that fake tensors cannot
    # answer; the trace feeds exactly `tokens` placeholders, so the check is switched off (its own env var)
    os.environ["TRANSFORMERS_DISABLE_TORCH_CHECK"] = "1"
    text = random_ids(vocab, workload.batch_size, workload.prompt_tokens - images.tokens, device)
    ids = torch.cat([torch.full((workload.batch_size, images.tokens), images.token_id, device=device), text],
                    dim=-1)
    pixels = torch.zeros(images.pixel_shape, dtype=model.dtype, device=device)
    return ids, {"pixel_values": pixels}


def run_prefill(model: Any, workload: Inference, probe: Probe, device: str,
                images: ImageBatch | None = None) -> None:
    """One forward over the prompt with full logits and a cache, as `model(input_ids, use_cache=True)`."""
    ids, extra = prompt_inputs(model, workload, device, images)
    patches.set_unpadded_length(None)
    with torch.no_grad(), probe.phase("prefill"):
        out = model(input_ids=ids, use_cache=True, **extra)
        probe.mark("logits", [out.logits])
        probe.mark("kv_cache", _cache_tensors(out[cache_key()]))
        del out


def make_cache(model: Any, workload: Inference) -> Any:
    """The cache generate() builds (`_prepare_cache_for_generation`): DynamicCache(config=...), whose sliding
    layers keep sliding_window - 1 tokens, or StaticCache of max_length - 1 tokens (the last token generated
    is never fed back), at least `max_cache_tokens` (generate's max_cache_len)."""
    from transformers import DynamicCache, StaticCache

    if workload.kv_cache is KvCache.STATIC:
        _check_static_supported(model)
        length = max(workload.total_tokens - 1, workload.max_cache_tokens or 0)
        return StaticCache(config=model.config, max_cache_len=length)
    if workload.kv_cache is KvCache.DYNAMIC:
        return DynamicCache(config=model.config)
    raise EngineUnavailable(f"kv_cache={workload.kv_cache} is a vLLM cache; use engine=analytic")


ALIBI_MODEL_TYPES = frozenset({"falcon"})
"""Models whose alibi bias transformers 5.17 builds for the 2-D mask's length, so generate() with a static
cache (a 4-D mask of the cache's length) fails on any device. Checked on real CPU tensors: tiny falcon with
alibi=True, generate(cache_implementation="static") fails in modeling_falcon.py: with an attention mask
"The size of tensor a (39) must match the size of tensor b (32)" (alibi masked_fill by the causal mask),
without one build_alibi_tensor's "too many values to unpack" (it gets the 4-D mask)."""


def cache_key() -> str:
    """The cache keyword of forward() and generate()'s helpers in the installed transformers: `cache` from
    5.24, `past_key_values` before (trace/targets.py)."""
    from memfit.trace.targets import cache_argument

    key = cache_argument()
    if key is None:
        raise EngineUnavailable("this transformers' generate() takes neither `cache` nor `past_key_values`; "
                                "use engine=analytic")
    return key


def _check_static_supported(model: Any) -> None:
    config = model.config
    if config.model_type in ALIBI_MODEL_TYPES and getattr(config, "alibi", False):
        raise EngineUnavailable(f"{config.model_type} with alibi fails in transformers' generate() with a "
                                "static cache (alibi bias and mask lengths differ); use kv_cache=dynamic")


def generation_position_ids(model: Any, attention_mask: torch.Tensor) -> torch.Tensor | None:
    """Position ids as generate() adds them when forward takes `position_ids`
    (`_prepare_position_ids_for_generation`): cumsum of the mask - 1, padding set to 0."""
    if "position_ids" not in inspect.signature(model.forward).parameters:
        return None
    position_ids = attention_mask.long().cumsum(-1) - 1
    return position_ids.masked_fill(attention_mask == 0, 0)


def run_generate(model: Any, workload: Inference, probe: Probe, device: str, *,
                 fast_forward: bool = True, images: ImageBatch | None = None) -> None:
    """`generate(max_new_tokens=n, min_new_tokens=n, do_sample=False)` step by step, without `.item()`.

    With `fast_forward`, only the first and the last decode steps run: in between, the cache, input ids,
    attention mask and position ids are grown to the last step's length without running the model. Each
    decode step holds the same tensors at a longer cache, so the last step is the decode peak.

    Reproduces generate()'s handling: logits_to_keep=1, prepare_inputs_for_generation and
    _update_model_kwargs_for_generation around each forward, an fp32 copy of the last logits, argmax, the
    growing input_ids, `del outputs` at the end of each step. n forwards in all: the prefill and n - 1 steps.
    With images, pixel_values stay in the model kwargs to the end, as generate() keeps them.
    """
    ids, extra = prompt_inputs(model, workload, device, images)
    kwargs: dict[str, Any] = {
        cache_key(): make_cache(model, workload), "use_cache": True, "logits_to_keep": 1,
        "attention_mask": torch.ones_like(ids), **extra,
    }
    del extra
    position_ids = generation_position_ids(model, kwargs["attention_mask"])
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    del position_ids
    with torch.no_grad():
        with probe.phase("prefill"):
            ids, kwargs = _generate_step(model, ids, kwargs, probe, first=True)
        with probe.phase("decode"):
            steps = workload.new_tokens - 1
            for index in range(steps):
                if fast_forward and steps > 2 and index == 1:
                    ids, kwargs = _fast_forward(ids, kwargs, steps - 2)
                    continue
                if fast_forward and steps > 2 and 1 < index < steps - 1:
                    continue
                ids, kwargs = _generate_step(model, ids, kwargs, probe, first=False)


def _generate_step(model: Any, ids: torch.Tensor, kwargs: dict[str, Any], probe: Probe,
                   *, first: bool) -> tuple[torch.Tensor, dict[str, Any]]:
    patches.set_unpadded_length(kwargs["attention_mask"].shape[1])
    if first:
        inputs = model.prepare_inputs_for_generation(ids, is_first_iteration=True, **kwargs)
    else:
        inputs = model.prepare_inputs_for_generation(ids, next_sequence_length=1, **kwargs)
    outputs = model(**inputs, return_dict=True)
    kwargs = model._update_model_kwargs_for_generation(outputs, kwargs)
    probe.mark("kv_cache", _cache_tensors(kwargs[cache_key()]))
    probe.mark("logits", [outputs.logits])
    scores = outputs.logits[:, -1].to(copy=True, dtype=torch.float32)
    probe.mark("logits", [scores])
    tokens = torch.argmax(scores, dim=-1)
    ids = torch.cat([ids, tokens[:, None]], dim=-1)
    del outputs
    return ids, kwargs


def _fast_forward(ids: torch.Tensor, kwargs: dict[str, Any],
                  num_tokens: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Grow the generation state by `num_tokens` positions without running the model."""
    cache = kwargs[cache_key()]
    for layer in getattr(cache, "layers", ()):
        if getattr(layer, "max_cache_len", None) is not None:     # static: preallocated; advance its counters
            if isinstance(getattr(layer, "cumulative_length", None), torch.Tensor):
                layer.cumulative_length.add_(num_tokens)
            if isinstance(getattr(layer, "cumulative_length_int", None), int):   # StaticSlidingWindowLayer
                layer.cumulative_length_int += num_tokens
            continue
        # DynamicSlidingWindowLayer: counts every token, keeps the last sliding_window - 1
        limit = None
        if isinstance(getattr(layer, "sliding_window", None), int):
            layer.cumulative_length += num_tokens
            limit = layer.sliding_window - 1
        for name in ("keys", "values"):
            old = getattr(layer, name, None)
            if isinstance(old, torch.Tensor) and old.dim() == 4:
                length = old.shape[2] + num_tokens
                shape = (*old.shape[:2], length if limit is None else min(length, limit), old.shape[3])
                setattr(layer, name, old.new_empty(shape))
                del old
    grown = dict(kwargs)
    for key in ("attention_mask", "position_ids"):
        value = kwargs.get(key)
        if isinstance(value, torch.Tensor):
            grown[key] = torch.cat([value, value.new_ones((*value.shape[:-1], num_tokens))], dim=-1)
    ids = torch.cat([ids, ids.new_zeros((ids.shape[0], num_tokens))], dim=-1)
    return ids, grown


def _cache_tensors(cache: Any) -> list[torch.Tensor]:
    """The cache's tensors: K and V, and a linear-attention / Mamba layer's conv and recurrent states
    (transformers 5.17 cache_utils.LinearAttentionLayer.conv_states / recurrent_states, dicts by index)."""
    out: list[torch.Tensor] = []
    for layer in getattr(cache, "layers", ()):
        states = [*(getattr(layer, "conv_states", None) or {}).values(),
                  *(getattr(layer, "recurrent_states", None) or {}).values()]
        out.extend(t for t in (getattr(layer, "keys", None), getattr(layer, "values", None), *states)
                   if isinstance(t, torch.Tensor))
    return out


def run_workload(model: Any, workload: Inference | Training, probe: Probe, device: str, *,
                 training_steps: int = 2, images: ImageBatch | None = None) -> Any:
    """Run the job's phases through `probe`; returns the optimizer of a training job (else None).
    With `images`, `workload` is the decoder's (its prompt counts the image placeholders)."""
    if isinstance(workload, Training):
        return run_training(model, workload, probe, device, steps=training_steps)
    elif workload.new_tokens == 0:
        run_prefill(model, workload, probe, device, images)
    else:
        run_generate(model, workload, probe, device, images=images)
    return None
