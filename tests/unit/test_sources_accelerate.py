"""accelerate configs → the training job they launch; each bad config one typed line."""

from __future__ import annotations

from pathlib import Path

import pytest

from memfit.core.choices import Checkpointing, FsdpStrategy, Offload, Precision, ZeroStage
from memfit.core.errors import ConfigError, InvalidWorkload
from memfit.core.workload import Training
from memfit.sources.accelerate import with_accelerate_config

FSDP_YAML = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
fsdp_config:
  fsdp_activation_checkpointing: true
  fsdp_offload_params: false
  fsdp_sharding_strategy: HYBRID_SHARD
mixed_precision: bf16
num_machines: 2
num_processes: 16
"""


def test_fsdp_yaml(tmp_path: Path) -> None:
    path = tmp_path / "default_config.yaml"
    path.write_text(FSDP_YAML)
    job = with_accelerate_config(Training(seq_len=1024), path)
    par = job.parallel
    assert (par.dp, par.gpus_per_node, par.fsdp) == (16, 8, FsdpStrategy.HYBRID)
    assert job.precision is Precision.AMP_BF16
    assert job.checkpointing is Checkpointing.FULL


def test_fsdp2_reshard_and_offload() -> None:
    config = {"distributed_type": "FSDP", "num_processes": 8, "mixed_precision": "no",
              "fsdp_config": {"fsdp_version": 2, "fsdp_reshard_after_forward": False,
                              "fsdp_offload_params": True}}
    job = with_accelerate_config(Training(seq_len=1024), config)
    assert (job.parallel.fsdp, job.parallel.offload_params) == (FsdpStrategy.SHARD_GRAD_OP, Offload.CPU)
    assert job.precision is Precision.FP32


def test_deepspeed_plugin_fields_and_ddp() -> None:
    config = {"distributed_type": "DEEPSPEED", "num_processes": 4, "mixed_precision": "fp16",
              "deepspeed_config": {"zero_stage": 3, "offload_optimizer_device": "cpu",
                                   "offload_param_device": "none", "gradient_accumulation_steps": 4}}
    job = with_accelerate_config(Training(seq_len=1024), config)
    assert (job.parallel.zero, job.parallel.offload_optimizer, job.grad_accum) == (ZeroStage.PARAMETERS,
                                                                                    Offload.CPU, 4)
    ddp = with_accelerate_config(Training(seq_len=1024),
                                 {"distributed_type": "MULTI_GPU", "num_processes": 2})
    assert (ddp.parallel.dp, ddp.parallel.fsdp) == (2, None)


@pytest.mark.parametrize(("config", "error", "match"), [
    ({"distributed_type": "FSDP", "num_processes": 6, "num_machines": 4}, ConfigError, "num_machines=4"),
    ({"distributed_type": "FSDP", "fsdp_config": {"fsdp_sharding_strategy": "HALF"}}, ConfigError, "HALF"),
    ({"distributed_type": "MEGATRON_LM"}, InvalidWorkload, "MEGATRON_LM"),
    ({"mixed_precision": "int4"}, ConfigError, "mixed_precision"),
])
def test_bad_configs(config: dict, error: type, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(error, match=match):
        with_accelerate_config(Training(seq_len=1024), config)


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("distributed_type: [FSDP\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        with_accelerate_config(Training(seq_len=1024), path)
