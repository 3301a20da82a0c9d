"""DeepSpeed ZeRO settings as memfit reads them from a user's DeepSpeed JSON config (already parsed).

`ZeroConfig` holds the knobs that decide what DeepSpeed allocates per GPU and in host RAM; `zero_settings`
maps a parsed config dict onto it and onto the `Parallelism` / `Training` fields it implies (stage,
precision, offload). "auto" values are those HF Trainer fills in (transformers integrations/deepspeed.py
`HfTrainerDeepSpeedConfig.trainer_config_finalize`): reduce_bucket_size = hidden², stage3_prefetch_bucket_size
= 0.9 × hidden², stage3_param_persistence_threshold = 10 × hidden; memfit keeps them as None and resolves
them against the model in `resolved_zero`. Defaults are DeepSpeed's own (deepspeed/runtime/zero/config.py,
DeepSpeedZeroConfig, 0.19): reduce/allgather buckets 5e8 elements, prefetch 5e7, max live 1e9,
persistence 1e5, sub_group_size 1e9, contiguous_gradients true, overlap_comm true only for stage 3.

Reading the file (bounded, pydantic-free) is the shells' job (sources); this module is pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memfit.core.errors import ConfigError, InvalidWorkload

DEFAULT_BUCKET_ELEMENTS = 500_000_000
"""reduce_bucket_size and allgather_bucket_size default (elements). Source: DeepSpeedZeroConfig."""
DEFAULT_PREFETCH_ELEMENTS = 50_000_000
"""stage3_prefetch_bucket_size default (elements). Source: DeepSpeedZeroConfig."""
DEFAULT_MAX_LIVE_PARAMETERS = 1_000_000_000
"""stage3_max_live_parameters default (elements). Source: DeepSpeedZeroConfig."""
DEFAULT_PERSISTENCE_THRESHOLD = 100_000
"""stage3_param_persistence_threshold default (elements): smaller parameters stay unpartitioned."""
DEFAULT_SUB_GROUP_SIZE = 1_000_000_000
"""sub_group_size default (elements): the optimizer steps over fp32 partitions this large at a time."""
MAX_CONFIG_ELEMENTS = 1 << 50
"""Largest element count accepted for a bucket or threshold (a bound on hostile input)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ZeroConfig:
    """The DeepSpeed ZeRO knobs that allocate memory. None: "auto", as HF Trainer fills it from the model."""

    reduce_bucket_elements: int | None = DEFAULT_BUCKET_ELEMENTS
    allgather_bucket_elements: int | None = DEFAULT_BUCKET_ELEMENTS
    prefetch_bucket_elements: int | None = DEFAULT_PREFETCH_ELEMENTS
    max_live_parameters: int | None = DEFAULT_MAX_LIVE_PARAMETERS
    param_persistence_threshold: int | None = DEFAULT_PERSISTENCE_THRESHOLD
    sub_group_size: int | None = DEFAULT_SUB_GROUP_SIZE
    contiguous_gradients: bool = True
    overlap_comm: bool | None = None          # None: DeepSpeed's default, true for stage 3 only
    pin_memory: bool = False                  # offload_optimizer / offload_param pin_memory

    def __post_init__(self) -> None:
        for name in ("reduce_bucket_elements", "allgather_bucket_elements", "prefetch_bucket_elements",
                     "max_live_parameters", "param_persistence_threshold", "sub_group_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 <= value <= MAX_CONFIG_ELEMENTS):
                raise InvalidWorkload(f"zero_config.{name}={value!r} must be an element count in 0..2^50 "
                                  "or null (auto)")


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedZero:
    """`ZeroConfig` with every "auto" filled in for one model and stage (elements; overlap decided)."""

    reduce_bucket_elements: int
    allgather_bucket_elements: int
    prefetch_bucket_elements: int
    max_live_parameters: int
    param_persistence_threshold: int
    sub_group_size: int
    contiguous_gradients: bool
    overlap_comm: bool
    pin_memory: bool


def resolved_zero(config: ZeroConfig | None, *, hidden_size: int, stage: int) -> ResolvedZero:
    """`config` (None: DeepSpeed's defaults) with "auto" values as HF Trainer sets them for `hidden_size`."""
    c = config or ZeroConfig()
    h2 = hidden_size * hidden_size

    def pick(value: int | None, auto: int) -> int:
        return auto if value is None else value

    return ResolvedZero(
        reduce_bucket_elements=pick(c.reduce_bucket_elements, h2),
        allgather_bucket_elements=pick(c.allgather_bucket_elements, DEFAULT_BUCKET_ELEMENTS),
        prefetch_bucket_elements=pick(c.prefetch_bucket_elements, 9 * h2 // 10),
        max_live_parameters=pick(c.max_live_parameters, DEFAULT_MAX_LIVE_PARAMETERS),
        param_persistence_threshold=pick(c.param_persistence_threshold, 10 * hidden_size),
        sub_group_size=pick(c.sub_group_size, DEFAULT_SUB_GROUP_SIZE),
        contiguous_gradients=c.contiguous_gradients,
        overlap_comm=stage == 3 if c.overlap_comm is None else c.overlap_comm,
        pin_memory=c.pin_memory,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ZeroSettings:
    """What a DeepSpeed config says, as memfit fields: None where the config leaves it to the trainer."""

    stage: int
    precision: str | None          # "bf16" | "fp16" | "fp32" | None ("auto": the trainer's choice)
    offload_optimizer: str         # "none" | "cpu" | "nvme"
    offload_params: str
    zero_config: ZeroConfig
    micro_batch_size: int | None = None
    grad_accum: int | None = None


_AUTO = "auto"


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"DeepSpeed config: {key} must be an object, got {type(value).__name__}")
    return value


def _count(section: dict[str, Any], key: str, default: int | None, where: str) -> int | None:
    """An element count as DeepSpeed takes it (int, or a float such as 5e8); "auto" → None."""
    value = section.get(key, default)
    if value == _AUTO or value is None:
        return None if value == _AUTO else default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or not 0 <= value <= MAX_CONFIG_ELEMENTS:
        raise ConfigError(f"DeepSpeed config: {where}.{key}={value!r} must be a count of elements or "
                          '"auto"')
    return int(value)


def _flag(section: dict[str, Any], key: str, default: bool | None, where: str) -> bool | None:
    value = section.get(key, default)
    if value == _AUTO:
        return default
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"DeepSpeed config: {where}.{key}={value!r} must be true or false")
    return value


def _enabled(data: dict[str, Any], key: str) -> bool | None:
    """bf16.enabled / fp16.enabled: True, False, or None for "auto"."""
    section = _section(data, key)
    value = section.get("enabled", False) if section else False
    if value == _AUTO:
        return None
    if not isinstance(value, bool):
        raise ConfigError(f"DeepSpeed config: {key}.enabled={value!r} must be true, false or \"auto\"")
    return value


def _device(zero: dict[str, Any], key: str) -> tuple[str, bool]:
    section = _section(zero, key)
    device = section.get("device", "none") if section else "none"
    if device not in ("none", "cpu", "nvme"):
        raise ConfigError(f"DeepSpeed config: zero_optimization.{key}.device={device!r}; use none, cpu "
                          "or nvme")
    pin = _flag(section, "pin_memory", False, f"zero_optimization.{key}")
    return device, bool(pin)


def _precision(data: dict[str, Any]) -> str | None:
    bf16, fp16 = _enabled(data, "bf16"), _enabled(data, "fp16")
    if bf16 and fp16:
        raise ConfigError("DeepSpeed config: bf16.enabled and fp16.enabled are both true; pick one")
    if bf16:
        return "bf16"
    if fp16:
        return "fp16"
    return None if bf16 is None or fp16 is None else "fp32"


def _batch_field(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None or value == _AUTO:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 20:
        raise ConfigError(f"DeepSpeed config: {key}={value!r} must be a positive integer or \"auto\"")
    return value


def zero_settings(data: Any) -> ZeroSettings:
    """The memfit reading of a parsed DeepSpeed JSON config.

    Raises:
        ConfigError: not an object, an unknown stage, a malformed knob (the message names the key).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"DeepSpeed config must be a JSON object, got {type(data).__name__}")
    zero = _section(data, "zero_optimization")
    stage = zero.get("stage", 0)
    if isinstance(stage, bool) or stage not in (0, 1, 2, 3):
        raise ConfigError(f"DeepSpeed config: zero_optimization.stage={stage!r}; use 0, 1, 2 or 3")
    where = "zero_optimization"
    prefetch = DEFAULT_PREFETCH_ELEMENTS
    opt_device, opt_pin = _device(zero, "offload_optimizer")
    param_device, param_pin = _device(zero, "offload_param")
    config = ZeroConfig(
        reduce_bucket_elements=_count(zero, "reduce_bucket_size", DEFAULT_BUCKET_ELEMENTS, where),
        allgather_bucket_elements=_count(zero, "allgather_bucket_size", DEFAULT_BUCKET_ELEMENTS, where),
        prefetch_bucket_elements=_count(zero, "stage3_prefetch_bucket_size", prefetch, where),
        max_live_parameters=_count(zero, "stage3_max_live_parameters", DEFAULT_MAX_LIVE_PARAMETERS, where),
        param_persistence_threshold=_count(zero, "stage3_param_persistence_threshold",
                                           DEFAULT_PERSISTENCE_THRESHOLD, where),
        sub_group_size=_count(zero, "sub_group_size", DEFAULT_SUB_GROUP_SIZE, where),
        contiguous_gradients=bool(_flag(zero, "contiguous_gradients", True, where)),
        overlap_comm=_flag(zero, "overlap_comm", None, where),
        pin_memory=opt_pin or param_pin,
    )
    return ZeroSettings(
        stage=stage, precision=_precision(data), offload_optimizer=opt_device, offload_params=param_device,
        zero_config=config, micro_batch_size=_batch_field(data, "train_micro_batch_size_per_gpu"),
        grad_accum=_batch_field(data, "gradient_accumulation_steps"),
    )


def given_by(settings: ZeroSettings) -> dict[str, object]:
    """The workload fields a DeepSpeed config fixes (field → value; "auto" entries left out): `zero`,
    `offload_optimizer`, `offload_params`, `zero_config`, and where concrete `precision`, `batch_size`,
    `grad_accum`. Shells compare these with the user's own flags and refuse a contradiction."""
    fields: dict[str, object] = {
        "zero": str(settings.stage), "offload_optimizer": settings.offload_optimizer,
        "offload_params": settings.offload_params,
        "zero_config": settings.zero_config if settings.stage >= 1 else None,
    }
    if settings.precision is not None:
        fields["precision"] = settings.precision
    if settings.micro_batch_size is not None:
        fields["batch_size"] = settings.micro_batch_size
    if settings.grad_accum is not None:
        fields["grad_accum"] = settings.grad_accum
    return fields
