"""The outside world → core types: catalog, local files, safetensors and GGUF headers, the Hugging Face Hub.

`load_model(ref)` resolves a reference in DESIGN §6 order; `get_gpu(name)` reads the GPU catalog.
`huggingface_hub` and `gguf` are imported inside the functions that need them, never here.
"""

from memfit.sources.catalog import catalog_gpus, catalog_models, get_gpu, load_catalog_model
from memfit.sources.resolve import load_model

__all__ = ["catalog_gpus", "catalog_models", "get_gpu", "load_catalog_model", "load_model"]
