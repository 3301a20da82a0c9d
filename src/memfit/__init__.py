"""memfit: how much GPU memory will this LLM job need, where does it go, will it fit, and what would fit.

    >>> import memfit
    >>> est = memfit.estimate("Llama-3.1-8B", memfit.Inference(prompt_tokens=4096))
    >>> est.peak.allocated_bytes
"""

from memfit._version import __version__
from memfit.api import count_params, estimate, get_gpu, load_model
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
    "Precision",
    "Quant",
    "Runtime",
    "Term",
    "Training",
    "UnknownGpu",
    "UnsupportedArchitecture",
    "ZeroStage",
    "__version__",
    "count_params",
    "estimate",
    "get_gpu",
    "load_model",
    "quant",
]
