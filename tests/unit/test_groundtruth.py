"""benchmarks/groundtruth.py: mapping a measured case's fields to a core workload."""

import importlib.util
import sys
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "groundtruth", Path(__file__).resolve().parents[2] / "benchmarks" / "groundtruth.py")
groundtruth = importlib.util.module_from_spec(_SPEC)  # type: ignore[arg-type]
sys.modules.setdefault("groundtruth", groundtruth)  # dataclasses look their module up while building
_SPEC.loader.exec_module(groundtruth)  # type: ignore[union-attr]


def _lora_case(targets: object) -> dict[str, object]:
    return {"task": "train", "method": "lora", "r": 8, "seq": 512, "targets": targets}


def test_comma_separated_targets_split_into_module_names() -> None:
    """"q_proj,v_proj" is two modules, not eleven characters."""
    workload = groundtruth.to_workload(_lora_case("q_proj, v_proj"))
    assert workload.lora is not None
    assert workload.lora.targets == ("q_proj", "v_proj")


def test_list_targets_kept_in_order() -> None:
    """A JSON list of module names is taken as is."""
    workload = groundtruth.to_workload(_lora_case(["o_proj", "down_proj"]))
    assert workload.lora is not None
    assert workload.lora.targets == ("o_proj", "down_proj")


def test_missing_targets_mean_all_linear() -> None:
    """No `targets` field (or an empty one) is peft's "all-linear", as the README's LoraConfig."""
    assert groundtruth.lora_targets(None) == ("all-linear",)
    assert groundtruth.lora_targets("") == ("all-linear",)
    assert groundtruth.lora_targets("all-linear") == ("all-linear",)
