"""memfit: how much GPU memory will this LLM job need, where does it go, will it fit, and what would fit.

>>> import memfit
>>> est = memfit.estimate("Llama-3.1-8B", memfit.Inference(prompt_tokens=4096))
>>> est.peak.allocated_bytes

Every public name is imported on first use (PEP 562), so `import memfit` and the CLI's start-up
(`memfit --help`) load nothing they do not need; type checkers see the imports below.
"""

import importlib as _importlib
import typing as _typing

from memfit._version import __version__

if _typing.TYPE_CHECKING:
    from memfit.api import (
        catalog_gpus,
        catalog_models,
        catalog_quants,
        compare,
        count_params,
        estimate,
        get_gpu,
        load_model,
        plan,
    )
    from memfit.core.choices import (
        AttnImpl,
        Checkpointing,
        Engine,
        KvCache,
        Method,
        Optimizer,
        PhaseName,
        Precision,
        Runtime,
        ZeroStage,
    )
    from memfit.core.dtypes import DType, Quant, quant
    from memfit.core.errors import (
        ConfigError,
        EngineUnavailable,
        InvalidWorkload,
        MemfitError,
        MissingExtra,
        ModelNotFound,
        UnknownGpu,
        UnsupportedArchitecture,
    )
    from memfit.core.plan import Plan
    from memfit.core.result import Estimate, Gpu, ParamNode, Phase, Term
    from memfit.core.spec import ModelSpec
    from memfit.core.workload import Inference, Lora, Parallelism, Training
    from memfit.sources.accelerate import with_accelerate_config
    from memfit.sources.deepspeed import with_deepspeed_config

__all__ = [
    "AttnImpl",
    "Checkpointing",
    "ConfigError",
    "DType",
    "Engine",
    "EngineUnavailable",
    "Estimate",
    "Gpu",
    "Inference",
    "InvalidWorkload",
    "KvCache",
    "Lora",
    "MemfitError",
    "Method",
    "MissingExtra",
    "ModelNotFound",
    "ModelSpec",
    "Optimizer",
    "Parallelism",
    "ParamNode",
    "Phase",
    "PhaseName",
    "Plan",
    "Precision",
    "Quant",
    "Runtime",
    "Term",
    "Training",
    "UnknownGpu",
    "UnsupportedArchitecture",
    "ZeroStage",
    "__version__",
    "catalog_gpus",
    "catalog_models",
    "catalog_quants",
    "compare",
    "count_params",
    "estimate",
    "get_gpu",
    "load_model",
    "plan",
    "quant",
    "with_accelerate_config",
    "with_deepspeed_config",
]

_HOME: dict[str, str] = {
    "AttnImpl": "memfit.core.choices",
    "Checkpointing": "memfit.core.choices",
    "ConfigError": "memfit.core.errors",
    "DType": "memfit.core.dtypes",
    "Engine": "memfit.core.choices",
    "EngineUnavailable": "memfit.core.errors",
    "Estimate": "memfit.core.result",
    "Gpu": "memfit.core.result",
    "Inference": "memfit.core.workload",
    "InvalidWorkload": "memfit.core.errors",
    "KvCache": "memfit.core.choices",
    "Lora": "memfit.core.workload",
    "MemfitError": "memfit.core.errors",
    "Method": "memfit.core.choices",
    "MissingExtra": "memfit.core.errors",
    "ModelNotFound": "memfit.core.errors",
    "ModelSpec": "memfit.core.spec",
    "Optimizer": "memfit.core.choices",
    "Parallelism": "memfit.core.workload",
    "ParamNode": "memfit.core.result",
    "Phase": "memfit.core.result",
    "PhaseName": "memfit.core.choices",
    "Plan": "memfit.core.plan",
    "Precision": "memfit.core.choices",
    "Quant": "memfit.core.dtypes",
    "Runtime": "memfit.core.choices",
    "Term": "memfit.core.result",
    "Training": "memfit.core.workload",
    "UnknownGpu": "memfit.core.errors",
    "UnsupportedArchitecture": "memfit.core.errors",
    "ZeroStage": "memfit.core.choices",
    "catalog_gpus": "memfit.api",
    "catalog_models": "memfit.api",
    "catalog_quants": "memfit.api",
    "compare": "memfit.api",
    "count_params": "memfit.api",
    "estimate": "memfit.api",
    "get_gpu": "memfit.api",
    "load_model": "memfit.api",
    "with_accelerate_config": "memfit.sources.accelerate",
    "with_deepspeed_config": "memfit.sources.deepspeed",
    "plan": "memfit.api",
    "quant": "memfit.core.dtypes",
}
"""Where each public name lives."""


def __getattr__(name: str) -> _typing.Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'memfit' has no attribute {name!r}")
    value = getattr(_importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
