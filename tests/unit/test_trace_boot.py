"""The fake-CUDA shim's boot: package data, compile cache, and the CPU fallback without a compiler."""

import json
import os
import subprocess
import sys

from tests.helpers import requires_transformers

from memfit.trace import boot

pytestmark = requires_transformers


def test_shim_source_registers_guard_and_hooks():
    """The shim registers a CUDA device guard and CUDA hooks that report isBuilt() true."""
    source = boot.shim_source()
    assert "C10_REGISTER_GUARD_IMPL(CUDA" in source
    assert "bool isBuilt() const override { return true; }" in source


def _boot_in_child(env: dict[str, str]) -> dict[str, str]:
    code = ("import json; from memfit.trace import boot; b = boot.load(); "
            "import torch; print(json.dumps({'device': b.device, 'note': b.note, "
            "'cuda': torch.cuda.is_available()}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, **env})
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_a_compiler_the_trace_falls_back_to_cpu(tmp_path):
    """An empty cache and a compiler that fails: device "cpu", and the note says why."""
    result = _boot_in_child({"MEMFIT_CACHE_DIR": str(tmp_path), "CXX": "/bin/false"})
    assert result["device"] == "cpu"
    assert result["note"].startswith("compiling the shim failed")
    assert "cpu tensors" in boot.fallback_assumption(boot.Boot(device="cpu", note=result["note"]))


def test_with_the_shim_cuda_stays_unavailable():
    """With the shim loaded the trace fakes cuda:0, yet torch.cuda.is_available() stays False."""
    result = _boot_in_child({})
    assert result == {"device": "cuda", "note": "", "cuda": False}
