"""The trace engine (extra [trace]): real Hugging Face model code on fake CUDA tensors, bytes counted per op.

Nothing here imports torch at import time: `engine.trace_estimate` runs each trace in a fresh subprocess
(`python -m memfit.trace.worker`), which loads the fake-CUDA shim (`boot.py`) before torch.
"""
