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


def real_prefill_bytes(model, forward) -> int:  # type: ignore[no-untyped-def]
    """Bytes a real CPU prefill allocates beyond `model`'s weights: `forward()` (which builds its own inputs
    and returns the model output, dropped at once) under memfit's Tracker, its load phase registering each
    weight's storage (made before the tracker) through a view."""
    import torch

    from memfit.trace.tracker import Tracker

    tracker = Tracker(device_type="cpu")
    with tracker, torch.no_grad():
        with tracker.phase("load"):
            views = [p.detach() for p in model.parameters()]
        with tracker.phase("prefill"):
            out = forward()
            del out
    del views
    load, prefill = tracker.phases
    return prefill.peak_bytes - load.peak_bytes
