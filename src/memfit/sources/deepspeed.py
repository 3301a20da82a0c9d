"""A user's DeepSpeed JSON config (`--deepspeed ds_config.json`), read bounded, applied to a workload.

The file is read like config.json (a regular file of at most MAX_DEEPSPEED_CONFIG_BYTES, UTF-8, JSON
bounded in depth and number size by `load_json`); `core.deepspeed.zero_settings` maps its knobs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from memfit.core.deepspeed import ZeroSettings, given_by, zero_settings
from memfit.core.errors import ConfigError, InvalidWorkload
from memfit.core.workload import Training
from memfit.sources._config import load_json, read_regular_file

MAX_DEEPSPEED_CONFIG_BYTES = 1 << 20
"""Largest DeepSpeed config read (bytes): real ones are a few KiB."""
PARALLEL_FIELDS = ("zero", "offload_optimizer", "offload_params", "zero_config")


def load_deepspeed_config(path: str | Path) -> ZeroSettings:
    """The ZeRO settings of the DeepSpeed JSON config at `path`.

    Raises:
        ModelNotFound: nothing is at `path`.
        ConfigError: not a regular file, too large, not UTF-8, not bounded JSON, or a malformed knob.
    """
    raw = read_regular_file(Path(path), max_bytes=MAX_DEEPSPEED_CONFIG_BYTES, what="DeepSpeed config")
    try:
        text = raw.decode("utf-8")
        data = load_json(text, origin=str(path))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); is it a DeepSpeed config?") from err
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} line {err.lineno} column {err.colno}: {err.msg}; fix the JSON") from err
    return zero_settings(data)


def with_deepspeed_config(workload: Training, config: str | Path | dict[str, Any]) -> Training:
    """`workload` under the DeepSpeed config `config` (a path, or the parsed JSON): its ZeRO stage,
    offload devices and buckets, and its precision, micro-batch and accumulation where they are not "auto".

    Raises:
        ConfigError: a malformed config (see `load_deepspeed_config`).
        InvalidWorkload: stage 0 (DeepSpeed's optimizer wrappers without ZeRO are not modelled), or an
            impossible result.
    """
    settings = zero_settings(config) if isinstance(config, dict) else load_deepspeed_config(config)
    if settings.stage == 0:
        # DeepSpeed without ZeRO runs its own bf16/fp16 optimizer wrappers (fp32 master and gradient copies),
        # which memfit does not model
        raise InvalidWorkload("DeepSpeed config: zero_optimization.stage=0 is not modelled; use stage 1, 2 "
                              "or 3, or plain data parallel (--dp) without --deepspeed")
    fields: dict[str, Any] = given_by(settings)
    parallel = dataclasses.replace(workload.parallel, fsdp=None,
                                   **{k: v for k, v in fields.items() if k in PARALLEL_FIELDS})
    rest = {k: v for k, v in fields.items() if k not in PARALLEL_FIELDS}
    return dataclasses.replace(workload, parallel=parallel, **rest)
