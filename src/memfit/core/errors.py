"""memfit's exceptions. The CLI catches exactly `MemfitError` and prints its one line.

```
MemfitError                       # root; the CLI catches exactly this; each class carries exit_code
├── ModelNotFound                 # unknown name, missing path, Hub 404 or gated (says how to log in)     → 2
├── ConfigError                   # malformed or incomplete config.json, safetensors header or GGUF       → 2
├── UnsupportedArchitecture       # a model_type we do not map; lists the supported ones                 → 2
├── InvalidWorkload (ValueError)  # impossible settings: tp does not divide heads, batch_size < 1, ...     → 2
├── UnknownGpu                    # not in the catalog; suggests the closest names                        → 2
├── MissingExtra (ImportError)    # an optional stack is not installed; names the pip command             → 1
└── EngineUnavailable             # an engine cannot run here (no CUDA GPU, trace failed, network down)    → 1
```
"""

from __future__ import annotations


class MemfitError(Exception):
    """Root of memfit's errors: one actionable line, and the process exit code to use."""

    exit_code: int = 1


class ModelNotFound(MemfitError):
    """Unknown catalog name, missing path, Hub 404, or a gated repo (the message says how to log in)."""

    exit_code = 2


class ConfigError(MemfitError):
    """A malformed or incomplete config.json, safetensors header or GGUF file."""

    exit_code = 2


class UnsupportedArchitecture(MemfitError):
    """A model_type with no family module (and no transformers to count it on the meta device)."""

    exit_code = 2


class InvalidWorkload(MemfitError, ValueError):
    """Impossible settings; the message names the field, the value and what is valid."""

    exit_code = 2


class UnknownGpu(MemfitError):
    """A GPU name not in the catalog; the message suggests the closest names."""

    exit_code = 2


class MissingExtra(MemfitError, ImportError):
    """An optional stack is not installed; the message names the pip command to run."""

    exit_code = 1


class EngineUnavailable(MemfitError):
    """An engine cannot run on this machine (no CUDA GPU, a trace that failed, no network)."""

    exit_code = 1
