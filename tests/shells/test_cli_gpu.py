"""The CLI with GPUs of other architectures: bf16 on a T4 refused or switched, capabilities in the catalog."""

from __future__ import annotations

import json
import sys

from typer.testing import CliRunner

from memfit.cli import run


def _invoke(*args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    with runner.isolation(env={"COLUMNS": "250"}) as (out, err, _):
        code = run(list(args))
        sys.stdout.flush()
        sys.stderr.flush()
        return code, out.getvalue().decode(), err.getvalue().decode()


def test_bf16_training_on_a_t4_is_one_error_line():
    """Training's default precision (bf16) on a T4: exit 2, one line naming the GPU and fp16."""
    code, out, err = _invoke("estimate", "Llama-3.2-1B", "--task", "train", "--seq-len", "512", "--gpu", "T4")
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        "error: precision=bf16 does not run on T4-16GB (turing, sm 7.5): it has no bf16 "
        "(that needs compute capability 8.0 or later); use --precision fp16"]


def test_explicit_bf16_inference_on_a_v100_is_refused():
    """--dtype bf16 on a V100 is refused with the flag to use instead."""
    code, out, err = _invoke("estimate", "Llama-3.2-1B", "--dtype", "bf16", "--gpu", "V100")
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert "dtype=bf16 does not run on V100-SXM2-16GB (volta, sm 7.0)" in err
    assert "use --dtype fp16" in err
    assert "Traceback" not in err


def test_checkpoint_bf16_on_a_t4_switches_to_fp16_with_a_note():
    """No --dtype: the bf16 checkpoint is estimated in fp16 on a T4, and the JSON says so."""
    code, out, err = _invoke("estimate", "Llama-3.2-1B", "--prompt-tokens", "128", "--gpu", "T4", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["workload"]["dtype"] == "fp16"
    assert any("has no bf16: estimated in fp16" in a for a in report["assumptions"])
    assert report["gpu"]["arch"] == "turing"


def test_catalog_gpus_shows_capabilities():
    """`catalog gpus --json` carries arch, compute capability and capabilities; the table shows them."""
    code, out, _ = _invoke("catalog", "gpus", "--json")
    assert code == 0
    t4 = next(g for g in json.loads(out)["gpus"] if g["name"] == "T4-16GB")
    assert (t4["arch"], t4["compute_capability"]) == ("turing", "7.5")
    assert (t4["bf16"], t4["flash_attention"]) == (False, False)
    assert t4["blas_workspace_bytes"] == 8_519_680
    code, out, _ = _invoke("catalog", "gpus")
    assert code == 0
    assert "turing 7.5" in out
    assert "fp16 only; 8,519,680 B" in out      # T4: no bf16, no flash, the :4096:2:16:8 workspace
    assert "bf16 fp8 flash; 32 MiB" in out      # H100
