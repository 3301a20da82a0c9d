"""A user's DeepSpeed JSON config: its knobs as memfit reads them, "auto" filled as HF Trainer does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.shells.test_cli import invoke

from memfit import api
from memfit.core.choices import Offload, Precision, ZeroStage
from memfit.core.deepspeed import ZeroConfig, resolved_zero, zero_settings
from memfit.core.errors import ConfigError
from memfit.core.workload import Parallelism, Training
from memfit.sources.deepspeed import load_deepspeed_config, with_deepspeed_config

HF_ZERO3 = {  # the ZeRO-3 + offload template of the transformers DeepSpeed docs (main_classes/deepspeed)
    "bf16": {"enabled": "auto"},
    "zero_optimization": {
        "stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": True},
        "offload_param": {"device": "cpu", "pin_memory": True}, "overlap_comm": True,
        "contiguous_gradients": True, "sub_group_size": 1e9, "reduce_bucket_size": "auto",
        "stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto",
        "stage3_max_live_parameters": 1e9, "stage3_max_reuse_distance": 1e9,
    },
    "gradient_accumulation_steps": "auto", "train_micro_batch_size_per_gpu": "auto",
}


def test_hf_template_maps_to_stage_offload_and_auto_buckets() -> None:
    """The HF ZeRO-3 template: stage 3, both offloads pinned, float counts read as ints, "auto" left open."""
    settings = zero_settings(HF_ZERO3)
    assert (settings.stage, settings.offload_optimizer, settings.offload_params) == (3, "cpu", "cpu")
    assert settings.precision is None
    assert settings.micro_batch_size is None
    assert settings.zero_config.sub_group_size == 1_000_000_000
    assert settings.zero_config.reduce_bucket_elements is None
    assert settings.zero_config.pin_memory


def test_auto_values_are_filled_as_hf_trainer_does() -> None:
    """hidden 4096: reduce bucket 4096² = 16,777,216; prefetch 0.9 × that = 15,099,494; persistence 40,960."""
    resolved = resolved_zero(zero_settings(HF_ZERO3).zero_config, hidden_size=4096, stage=3)
    assert (resolved.reduce_bucket_elements, resolved.prefetch_bucket_elements,
            resolved.param_persistence_threshold) == (16_777_216, 15_099_494, 40_960)


def test_overlap_comm_defaults_to_stage_3_only() -> None:
    """overlap_comm left unset is true for stage 3, false for 1 and 2 (DeepSpeedZeroConfig validator)."""
    assert resolved_zero(ZeroConfig(), hidden_size=64, stage=3).overlap_comm
    assert not resolved_zero(ZeroConfig(), hidden_size=64, stage=2).overlap_comm


@pytest.mark.parametrize(("config", "match"), [
    ({"zero_optimization": {"stage": 4}}, "zero_optimization.stage=4; use 0, 1, 2 or 3"),
    ({"bf16": {"enabled": True}, "fp16": {"enabled": True}}, "both true"),
    ({"zero_optimization": {"stage": 2, "reduce_bucket_size": "big"}}, "reduce_bucket_size='big'"),
    ({"zero_optimization": {"stage": 3, "offload_param": {"device": "gpu"}}}, "device='gpu'; use none"),
    ([], "must be a JSON object"),
])
def test_malformed_configs_name_the_key(config: object, match: str) -> None:
    """A bad knob is one ConfigError line naming it."""
    with pytest.raises(ConfigError, match=match):
        zero_settings(config)


def test_file_is_read_bounded(tmp_path: Path) -> None:
    """Not JSON is a ConfigError with the line; a real file gives its settings."""
    bad = tmp_path / "ds.json"
    bad.write_text("{stage: 3}")
    with pytest.raises(ConfigError, match="line 1 column 2"):
        load_deepspeed_config(bad)
    bad.write_text(json.dumps(HF_ZERO3))
    assert load_deepspeed_config(bad).stage == 3


def test_with_deepspeed_config_sets_the_workload() -> None:
    """A concrete config fixes stage, offload, precision, micro-batch and accumulation; dp stays."""
    config = {"fp16": {"enabled": True}, "train_micro_batch_size_per_gpu": 2,
              "gradient_accumulation_steps": 4, "zero_optimization": {"stage": 2}}
    wl = with_deepspeed_config(Training(seq_len=128, parallel=Parallelism(dp=4)), config)
    assert (wl.parallel.dp, wl.parallel.zero, wl.parallel.offload_optimizer) == (4, ZeroStage.GRADIENTS,
                                                                                 Offload.NONE)
    assert (wl.precision, wl.batch_size, wl.grad_accum) == (Precision.FP16, 2, 4)


def test_stage_0_is_refused() -> None:
    """A config without ZeRO is one InvalidWorkload line: DeepSpeed's bf16 wrapper is not modelled."""
    from memfit.core.errors import InvalidWorkload

    with pytest.raises(InvalidWorkload, match="stage=0 is not modelled"):
        with_deepspeed_config(Training(seq_len=8), {"bf16": {"enabled": True}})


def test_auto_reduce_bucket_is_smaller_than_deepspeed_default() -> None:
    """HF's "auto" reduce bucket on Llama-3.2-1B (2048² elements, bf16: 8 MiB) replaces DeepSpeed's 1e9 B
    (without a bf16 or fp16 section DeepSpeed trains, and buckets, in fp32)."""
    spec = api.load_model("Llama-3.2-1B")
    auto = {"bf16": {"enabled": True}, "zero_optimization": {"stage": 2, "reduce_bucket_size": "auto"}}
    wl = with_deepspeed_config(Training(seq_len=64, parallel=Parallelism(dp=2)), auto)
    flat = api.estimate(spec, wl).phase("optimizer").memory.flat()
    assert flat["gradients/ipg_buckets"] == 2 * 2048 * 2048


def test_cli_deepspeed_flag_and_contradiction(tmp_path: Path) -> None:
    """--deepspeed equals the API under the same config; a contradicting --zero is one error line, exit 2."""
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(HF_ZERO3))
    ok = invoke("estimate", "Llama-3.2-1B", "--task", "train", "--seq-len", "64", "--dp", "2",
                "--deepspeed", str(path), "--json")
    assert ok.exit_code == 0, ok.stderr
    expected = api.estimate("Llama-3.2-1B", with_deepspeed_config(
        Training(seq_len=64, parallel=Parallelism(dp=2)), path)).to_dict()
    assert json.loads(ok.stdout) == expected
    bad = invoke("estimate", "Llama-3.2-1B", "--task", "train", "--dp", "2", "--deepspeed", str(path),
                 "--zero", "2")
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error: --zero 2 contradicts")
