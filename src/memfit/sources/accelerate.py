"""An accelerate config (`accelerate config` → default_config.yaml, or JSON) read into a training job.

What memfit takes from it (accelerate 1.16 `commands/config/config_args.py` ClusterConfig fields):
- `distributed_type`: NO (one GPU), MULTI_GPU (DDP over `num_processes`), FSDP, DEEPSPEED.
- `num_processes` (all processes of the job) and `num_machines` (GPUs per node = processes / machines).
- `mixed_precision`: bf16 / fp16 autocast over fp32 parameters (memfit amp-bf16 / amp-fp16), no → fp32.
- `fsdp_config`: `fsdp_sharding_strategy` (FULL_SHARD / 1, SHARD_GRAD_OP / 2, NO_SHARD / 3, HYBRID_SHARD / 4,
  HYBRID_SHARD_ZERO2 / 5) or, for `fsdp_version: 2`, `fsdp_reshard_after_forward` (true: full, false:
  shard-grad-op); `fsdp_offload_params` (parameters, gradients and optimizer step on the CPU);
  `fsdp_activation_checkpointing`.
- `deepspeed_config`: `deepspeed_config_file` (read as `--deepspeed`), or `zero_stage`,
  `offload_optimizer_device`, `offload_param_device`, `gradient_accumulation_steps`.
Anything else (dynamo, tpu, ipex, megatron_lm) is ignored; a `megatron_lm_config` is refused (not modelled).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from memfit.core.choices import Checkpointing, FsdpStrategy, Offload, Precision, ZeroStage
from memfit.core.errors import ConfigError, InvalidWorkload, ModelNotFound
from memfit.core.workload import Training
from memfit.sources._config import read_regular_file, regular_file_size

MAX_ACCELERATE_CONFIG_BYTES = 256 * 1024
"""Largest accelerate config read: real ones are under 2 KB."""

_SHARDING = {
    "FULL_SHARD": FsdpStrategy.FULL, "1": FsdpStrategy.FULL,
    "SHARD_GRAD_OP": FsdpStrategy.SHARD_GRAD_OP, "2": FsdpStrategy.SHARD_GRAD_OP,
    "NO_SHARD": None, "3": None,
    "HYBRID_SHARD": FsdpStrategy.HYBRID, "4": FsdpStrategy.HYBRID,
    "HYBRID_SHARD_ZERO2": FsdpStrategy.HYBRID, "5": FsdpStrategy.HYBRID,
}
"""accelerate's fsdp_sharding_strategy names and numbers (torch ShardingStrategy) → memfit's FSDP strategy;
NO_SHARD is plain data parallel."""
_PRECISION = {"bf16": Precision.AMP_BF16, "fp16": Precision.AMP_FP16, "no": Precision.FP32,
              "fp8": Precision.AMP_BF16}
_OFFLOAD = {"none": Offload.NONE, "cpu": Offload.CPU, "nvme": Offload.NVME}


def load_accelerate_config(path: str | Path) -> dict[str, Any]:
    """The parsed accelerate config at `path` (YAML, or JSON when it ends in .json).

    Raises:
        ModelNotFound: no such file.
        ConfigError: not a mapping, not YAML/JSON, or larger than MAX_ACCELERATE_CONFIG_BYTES.
    """
    where = Path(path)
    if regular_file_size(where) is None:
        raise ModelNotFound(f"no such accelerate config: {where}")
    raw = read_regular_file(where, max_bytes=MAX_ACCELERATE_CONFIG_BYTES, what="accelerate config")
    try:
        text = raw.decode("utf-8")
        if where.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml  # huggingface_hub's dependency

            data = yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{where}: not a readable accelerate config ({err})") from err
    except Exception as err:   # yaml.YAMLError and its subclasses
        raise ConfigError(f"{where}: not valid YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: an accelerate config is a mapping of settings")
    return data


def with_accelerate_config(workload: Training, config: str | Path | dict[str, Any]) -> Training:
    """`workload` as the accelerate config launches it: GPU count and nodes, FSDP or DeepSpeed settings,
    mixed precision, activation checkpointing.

    Raises:
        ConfigError: a malformed config (one line naming the field).
        InvalidWorkload: a setting memfit does not model (Megatron-LM), or an impossible job.
    """
    origin = str(config) if not isinstance(config, dict) else "accelerate config"
    data = config if isinstance(config, dict) else load_accelerate_config(config)
    kind = str(data.get("distributed_type", "NO")).upper()
    if kind == "MEGATRON_LM" or data.get("megatron_lm_config"):
        raise InvalidWorkload(f"{origin}: distributed_type MEGATRON_LM is not modelled; use --tp/--pp flags")
    try:
        processes = int(data.get("num_processes", 1) or 1)
        machines = int(data.get("num_machines", 1) or 1)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{origin}: num_processes / num_machines must be whole numbers ({err})") from err
    if processes < 1 or machines < 1 or processes % machines:
        raise ConfigError(f"{origin}: num_processes={processes} is not a whole number of GPUs on each of "
                          f"num_machines={machines}")
    fields: dict[str, Any] = {}
    precision = str(data.get("mixed_precision", "no")).lower()
    if precision not in _PRECISION:
        raise ConfigError(f"{origin}: mixed_precision={precision!r} (expected no, fp16, bf16 or fp8)")
    fields["precision"] = _PRECISION[precision]
    parallel = dataclasses.replace(workload.parallel, dp=processes if kind != "NO" else 1, tp=1, pp=1,
                                   gpus_per_node=processes // machines, fsdp=None, zero=ZeroStage.NONE,
                                   offload_params=Offload.NONE, offload_optimizer=Offload.NONE)
    if kind == "FSDP":
        parallel, checkpointing = _fsdp(data.get("fsdp_config") or {}, parallel, origin=origin)
        if checkpointing:
            fields["checkpointing"] = Checkpointing.FULL
    elif kind == "DEEPSPEED":
        return _deepspeed(data.get("deepspeed_config") or {}, dataclasses.replace(workload, parallel=parallel,
                                                                                   **fields), origin=origin)
    elif kind not in ("NO", "MULTI_GPU"):
        raise InvalidWorkload(f"{origin}: distributed_type {kind} is not a GPU training setup memfit models")
    return dataclasses.replace(workload, parallel=parallel, **fields)


def _fsdp(fsdp: dict[str, Any], parallel: Any, *, origin: str) -> tuple[Any, bool]:
    if str(fsdp.get("fsdp_version", 1)) == "2":
        reshard = fsdp.get("fsdp_reshard_after_forward", True)
        strategy: FsdpStrategy | None = FsdpStrategy.FULL if reshard in (True, "true", "True") \
            else FsdpStrategy.SHARD_GRAD_OP
    else:
        name = str(fsdp.get("fsdp_sharding_strategy", "FULL_SHARD")).upper()
        if name not in _SHARDING:
            raise ConfigError(f"{origin}: fsdp_sharding_strategy={name!r} (expected FULL_SHARD, "
                              "SHARD_GRAD_OP, NO_SHARD, HYBRID_SHARD or HYBRID_SHARD_ZERO2)")
        strategy = _SHARDING[name]
    offload = fsdp.get("fsdp_offload_params") in (True, "true", "True")
    parallel = dataclasses.replace(parallel, fsdp=strategy,
                                   offload_params=Offload.CPU if offload and strategy else Offload.NONE)
    return parallel, fsdp.get("fsdp_activation_checkpointing") in (True, "true", "True")


def _deepspeed(ds: dict[str, Any], workload: Training, *, origin: str) -> Training:
    from memfit.sources.deepspeed import with_deepspeed_config

    if ds.get("deepspeed_config_file"):
        return with_deepspeed_config(workload, ds["deepspeed_config_file"])
    try:
        stage = ZeroStage.parse(str(ds.get("zero_stage", 2)), field="zero_stage")
        optimizer = _OFFLOAD[str(ds.get("offload_optimizer_device", "none")).lower()]
        params = _OFFLOAD[str(ds.get("offload_param_device", "none")).lower()]
    except (KeyError, InvalidWorkload) as err:
        raise ConfigError(f"{origin}: deepspeed_config has an unknown zero_stage or offload device "
                          f"({err})") from err
    parallel = dataclasses.replace(workload.parallel, zero=stage, offload_optimizer=optimizer,
                                   offload_params=params)
    accum = ds.get("gradient_accumulation_steps")
    grad_accum = accum if isinstance(accum, int) and accum >= 1 else workload.grad_accum
    return dataclasses.replace(workload, parallel=parallel, grad_accum=grad_accum)
