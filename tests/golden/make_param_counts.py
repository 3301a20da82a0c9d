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
    OUT.write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
