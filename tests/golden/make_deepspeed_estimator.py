"""Regenerate tests/data/deepspeed_estimator.json: DeepSpeed's own ZeRO model-state estimators, recorded.

DeepSpeed is no memfit dependency; this script runs once where it is installed (torch too, for the
meta-device model the inputs are read from), from the repository root:
    PYTHONPATH=src python -m tests.golden.make_deepspeed_estimator
Each row records the inputs (total parameters, the largest module's own parameters as DeepSpeed's
`model_to_params` counts them: `sum(p.numel() for p in m.parameters(recurse=False))` over `model.modules()`,
on `AutoModelForCausalLM.from_config` built under torch.device("meta")), the call's arguments, DeepSpeed's
(cpu_mem, gpu_mem) and the DeepSpeed version.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "deepspeed_estimator.json"
MODELS = ("Llama-3.2-1B", "Llama-3.1-8B", "Llama-3.1-70B", "Qwen2.5-0.5B")
LAYOUTS = ((1, 8), (1, 4), (2, 8))          # (num_nodes, num_gpus_per_node)


def _inputs(name: str) -> tuple[int, int]:
    import torch
    import transformers

    config = transformers.AutoConfig.for_model(
        **json.loads((ROOT / "src" / "memfit" / "catalog" / "models" / f"{name}.json").read_text()))
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    seen: dict[int, int] = {}
    for p in model.parameters():            # tied weights once (meta tensors share no data_ptr)
        seen[id(p)] = p.numel()
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return sum(seen.values()), largest


def main() -> None:
    import deepspeed
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    rows = []
    for name in MODELS:
        total, largest = _inputs(name)
        for nodes, gpus in LAYOUTS:
            for offload in (False, True):
                cpu, gpu = estimate_zero2_model_states_mem_needs(
                    total, num_gpus_per_node=gpus, num_nodes=nodes, cpu_offload=offload)
                rows.append({"id": f"zero2/{name}/{nodes}x{gpus}/offload={offload}", "stage": 2,
                             "model": name, "total_params": total, "largest_layer_params": largest,
                             "num_nodes": nodes, "num_gpus_per_node": gpus, "cpu_offload": offload,
                             "cpu_offload_params": False, "zero_init": True,
                             "cpu_mem": cpu, "gpu_mem": gpu})
            for offload, offload_params in ((False, False), (True, False), (True, True)):
                cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
                    total, largest, num_gpus_per_node=gpus, num_nodes=nodes, cpu_offload=offload,
                    cpu_offload_params=offload_params, zero_init=True)
                key = f"zero3/{name}/{nodes}x{gpus}/offload={offload}/params={offload_params}"
                rows.append({"id": key, "stage": 3, "model": name, "total_params": total,
                             "largest_layer_params": largest,
                             "num_nodes": nodes, "num_gpus_per_node": gpus, "cpu_offload": offload,
                             "cpu_offload_params": offload_params, "zero_init": True,
                             "cpu_mem": cpu, "gpu_mem": gpu})
    source = (f"deepspeed {deepspeed.__version__}: "
              "runtime.zero.stage_1_and_2.estimate_zero2_model_states_mem_needs / "
              "runtime.zero.stage3.estimate_zero3_model_states_mem_needs (additional_buffer_factor=1.5); "
              f"inputs from transformers {__import__('transformers').__version__} on the meta device")
    OUT.write_text(json.dumps({"source": source, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
