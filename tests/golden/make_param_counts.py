"""Regenerate tests/data/param_counts.json: exact totals counted on the meta device.

Run from the repository root with torch and transformers installed:
    python -m tests.golden.make_param_counts
Each row names its config (catalog basename or tests/data/configs file), the total that
`AutoModelForCausalLM.from_config` builds under torch.device("meta") (named_parameters(), tied weights once)
and the transformers version that built it.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "param_counts.json"
GROUND_TRUTH = {  # loaded n_params of the measured models: /work/shared/groundtruth/h100-2026-11.jsonl
    "Llama-3.2-1B": ("llama", 1_235_814_400),
    "Llama-3.1-8B": ("llama", 8_030_261_248),
    "Qwen2.5-0.5B": ("qwen2", 494_032_768),
}
SOURCES = {
    "catalog": ROOT / "src" / "memfit" / "catalog" / "models",
    "configs": ROOT / "tests" / "data" / "configs",
}


def main() -> None:
    import transformers

    from memfit.trace.meta import count_params_on_meta

    rows = []
    for kind, folder in SOURCES.items():
        for path in sorted(folder.glob("*.json")):
            config = json.loads(path.read_text())
            rows.append({
                "id": f"{kind}/{path.stem}",
                "config": f"{kind}/{path.name}",
                "model_type": config["model_type"],
                "num_params": count_params_on_meta(config, name=path.stem).num_params,
                "source": f"meta-device count, transformers {transformers.__version__}",
            })
    for name, (model_type, num_params) in GROUND_TRUTH.items():
        rows.append({
            "id": f"groundtruth/{name}",
            "config": f"configs/{name}.json",
            "model_type": model_type,
            "num_params": num_params,
            "source": "ground truth n_params (loaded on an H100), shared/groundtruth/h100-2026-11.jsonl",
        })
    OUT.write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
