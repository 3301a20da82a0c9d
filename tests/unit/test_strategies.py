"""The multi-GPU strategy search behind `plan --gpu-counts`."""

from __future__ import annotations

import json

from tests.shells.test_cli import invoke

from memfit import api
from memfit.core.workload import Training

SEQ_4K = Training(seq_len=4096)


def test_70b_full_fine_tune_at_4k_on_8_and_16_h100() -> None:
    """Llama-3.1-70B full fine-tune at 4k (bf16, AdamW): 8 H100s need offload and checkpointing; 16 fit
    FSDP with checkpointing; plain DDP fits neither (its bf16 weights alone are 131 GiB)."""
    plan = api.plan("Llama-3.1-70B", SEQ_4K, gpu="H100-SXM-80GB", gpu_counts=(8, 16))
    fits = {(s.num_gpus, s.label) for s in plan.strategies if s.fits}
    assert (8, "ZeRO-3 + optimizer offload (cpu) + checkpointing") in fits
    assert (8, "FSDP full + checkpointing") not in fits
    assert (16, "FSDP full + checkpointing") in fits
    assert not any(label.startswith("DDP") for _, label in fits)


def test_offload_reports_host_ram_per_node() -> None:
    """ZeRO-3 + optimizer offload on 8 GPUs of one node: the node holds 8 ranks' fp32 master (4 B),
    Adam states (8 B) and fp32 gradients (4 B) per parameter / 8 each: 16 B × 70,553,706,496."""
    plan = api.plan("Llama-3.1-70B", SEQ_4K, gpu="H100-SXM-80GB", gpu_counts=(8,))
    offload = next(s for s in plan.strategies if s.label == "ZeRO-3 + optimizer offload (cpu)")
    assert offload.host_bytes_per_node == 16 * 70_553_706_496


def test_cli_gpu_counts_json_and_bad_value() -> None:
    """--gpu-counts puts the strategies in memfit.plan/1; a non-number is one error line, exit 2."""
    ok = invoke("plan", "Llama-3.2-1B", "--task", "train", "--seq-len", "512", "--gpu", "24GiB",
                "--gpu-counts", "2", "--json")
    assert ok.exit_code == 0, ok.stderr
    strategies = json.loads(ok.stdout)["strategies"]
    assert {s["num_gpus"] for s in strategies} == {2}
    assert all(isinstance(s["host_bytes_per_node"], int) for s in strategies)
    bad = invoke("plan", "Llama-3.2-1B", "--task", "train", "--gpu", "24GiB", "--gpu-counts", "8,x")
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error: --gpu-counts '8,x'")
