"""Hybrid attention / state-space models at real shapes: parameters vs the meta device, analytic vs trace.

    .venv/bin/python benchmarks/hybrid_check.py [--out DIR] [--only SUBSTRING]

This checks synthetic configs at the layer shapes of Granite-4.0-H-Small and Nemotron-Nano-9B-v2 (fields
as their model cards describe them), the catalog's Falcon-H1-7B-Instruct (24 Mamba heads of 128), the first
8 layers of the
catalog's Qwen3-Next-80B-A3B-Instruct (gated DeltaNet), the first attention period (8 layers) of the
catalog's AI21-Jamba-1.5-Mini (the trace runs Jamba's selective scan token by token, so
its 32 layers at 4,000 tokens would take most of an hour on fake tensors), and the tiny test configs. Per
case and phase it records the allocated peak of both engines; writes results/hybrid-<date>.md, or
results/hybrid-<only>-<date>.md for the models whose name contains --only.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "src" / "memfit" / "catalog" / "models"
SHAPES: dict[str, dict[str, Any]] = {
    "granite-4.0-h-small-shapes": {
        "model_type": "granitemoehybrid", "hidden_size": 4096, "num_hidden_layers": 40,
        "layer_types": ["attention" if i % 10 == 5 else "mamba" for i in range(40)],
        "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 768,
        "shared_intermediate_size": 1536, "num_local_experts": 72, "num_experts_per_tok": 10,
        "mamba_n_heads": 128, "mamba_n_groups": 1, "mamba_d_state": 128, "mamba_d_head": 64,
        "mamba_d_conv": 4, "mamba_expand": 2, "mamba_chunk_size": 256, "vocab_size": 100352,
        "max_position_embeddings": 131072, "tie_word_embeddings": True, "position_embedding_type": "nope",
        "torch_dtype": "bfloat16",
    },
    "nemotron-nano-9b-v2-shapes": {
        "model_type": "nemotron_h", "hidden_size": 4480, "num_attention_heads": 40, "num_key_value_heads": 8,
        "head_dim": 128, "intermediate_size": 15680, "mlp_hidden_act": "relu2", "mamba_num_heads": 128,
        "mamba_head_dim": 80, "n_groups": 8, "ssm_state_size": 128, "conv_kernel": 4, "chunk_size": 128,
        "hybrid_override_pattern": "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-",
        "num_hidden_layers": 56,  # the published 56-layer pattern (27 Mamba-2, 4 attention, 25 MLP)
        "vocab_size": 131072, "max_position_embeddings": 131072, "torch_dtype": "bfloat16",
    },
    "falcon-h1-7b-instruct": json.loads((CATALOG / "Falcon-H1-7B-Instruct.json").read_text()),
    "jamba-1.5-mini-8-layers": {
        **json.loads((CATALOG / "AI21-Jamba-1.5-Mini.json").read_text()), "num_hidden_layers": 8,
    },
    "qwen3-next-80b-a3b-8-layers": {
        **json.loads((CATALOG / "Qwen3-Next-80B-A3B-Instruct.json").read_text()), "num_hidden_layers": 8,
    },
}
"""Layer shapes of five released hybrids; synthetic configs (Falcon-H1: its catalog config; Jamba and
Qwen3-Next: their catalog configs
cut to 8 layers, two attention periods for Qwen3-Next: 512 experts a layer make the whole model slow to
build on fake tensors)."""
CASES = ((1, 4000, 16), (2, 1000, 8))
"""(batch, prompt tokens, new tokens) per model (the tiny configs hold 4,096 positions)."""
TINY = ("tiny-granitemoehybrid", "tiny-nemotron_h", "tiny-bamba", "tiny-falcon_h1", "tiny-jamba",
        "tiny-qwen3_next")
TINY_POSITIONS = 4096
"""Positions every tiny config is given, so CASES' 4,000-token prompt fits (tiny-qwen3_next holds 128)."""


def _configs() -> dict[str, dict[str, Any]]:
    tiny = {stem: json.loads((ROOT / "tests" / "data" / "configs" / f"{stem}.json").read_text())
            for stem in TINY}
    tiny = {stem: {**config, "max_position_embeddings": max(config.get("max_position_embeddings", 0),
                                                            TINY_POSITIONS)}
            for stem, config in tiny.items()}
    return {**SHAPES, **tiny}


def _rows(name: str, config: dict[str, Any]) -> list[str]:
    from memfit.core.families import spec_from_config
    from memfit.core.params import count_params
    from memfit.core.spec import ModelSource
    from memfit.core.workload import Inference
    from memfit.trace.meta import count_params_on_meta

    spec = spec_from_config(config, name=name, source=ModelSource(kind="config", ref=name,
                                                                  config_json=json.dumps(config)))
    ours, meta = count_params(spec).num_params, count_params_on_meta(config).num_params
    rows = [f"| {name} | params | {ours:,} | {meta:,} | {(ours - meta) / meta:+.2%} |"]
    for batch, prompt, new in CASES:
        workload = Inference(prompt_tokens=prompt, new_tokens=new, batch_size=batch)
        rows += phase_rows(name, f"b{batch} p{prompt} n{new}", spec, workload)
    return rows


def phase_rows(model: str, case: str, spec: Any, workload: Any) -> list[str]:
    """One results row per traced phase: both engines' allocated peak and the analytic's error."""
    from memfit.core.estimate import estimate
    from memfit.trace.engine import trace_estimate

    analytic, traced = estimate(spec, workload), trace_estimate(spec, workload, None)
    rows = []
    for phase in traced.phases:
        a, t = analytic.phase(phase.name).allocated_bytes, phase.allocated_bytes
        rows.append(f"| {model} | {case} {phase.name} | {a / 2**30:.3f} GiB | {t / 2**30:.3f} GiB | "
                    f"{(a - t) / t:+.2%} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", default="", help="check only the models whose name contains this")
    args = parser.parse_args()
    lines = ["# Hybrid models: analytic vs trace (allocated peak), parameters vs the meta device", "",
             "| model | case | analytic | trace / meta | error |", "|---|---|---:|---:|---:|"]
    for name, config in _configs().items():
        if args.only in name:
            lines.extend(_rows(name, config))
    stem = f"hybrid-{args.only}" if args.only else "hybrid"
    out = args.out / f"{stem}-{datetime.date.today().isoformat()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(out)


if __name__ == "__main__":
    main()
