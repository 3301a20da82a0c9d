"""memfit: how much GPU memory will this LLM job need, where does it go, will it fit, and what would fit.

>>> import memfit
>>> est = memfit.estimate("Llama-3.1-8B", memfit.Inference(prompt_tokens=4096))
>>> est.peak.allocated_bytes
"""

import typing as _typing

from memfit._version import __version__
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
]

_API = frozenset(
    {
        "catalog_gpus",
        "catalog_models",
        "catalog_quants",
        "compare",
        "count_params",
        "estimate",
        "get_gpu",
        "load_model",
        "plan",
    }
)
"""Functions of memfit.api, imported on first use: the CLI's start-up (`memfit --help`) skips the catalog."""

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


def __getattr__(name: str) -> _typing.Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module("memfit.api"), name)
    raise AttributeError(f"module 'memfit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
