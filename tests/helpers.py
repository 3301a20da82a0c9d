"""Skip marks for optional stacks, named after what they need."""

import importlib.util

import pytest

requires_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None or importlib.util.find_spec("torch") is None,
    reason="needs torch and transformers: pip install 'memfit[trace]'",
)
requires_gguf = pytest.mark.skipif(importlib.util.find_spec("gguf") is None,
                                   reason="needs gguf: pip install 'memfit[gguf]'")
requires_web = pytest.mark.skipif(importlib.util.find_spec("fastapi") is None,
                                  reason="needs fastapi: pip install 'memfit[web]'")

