"""Qwen3-VL at real shapes: parameters vs the meta device, text prompts analytic vs trace, images analytic vs
the real model on CPU tensors.

    .venv/bin/python benchmarks/qwen3_vl_check.py [--out DIR] [--only SUBSTRING]

- params: count_params against AutoModelForImageTextToText on the meta device, the whole catalog configs;
- text: the catalog configs cut to 4 decoder layers (every other field as published), analytic vs trace
  (fake CUDA tensors) per phase;
- images: the trace cannot feed Qwen3-VL's packed tower (its chunk lengths are read with .tolist()), so
  the real model runs on CPU tensors under the trace's Tracker, eager attention in fp32 (CPU and CUDA
  allocate alike there), the tower at its published width cut to 4 blocks with deepstack after blocks
  0, 1, 2 (all three features alive in the last block, as in the published 27-block tower), the decoder at
  its published width cut to 2 layers and its vocabulary to 4,096 (the special token ids moved into it;
  the LM head keeps one position). The
  working set (allocated less weights and workspace) of the prefill is compared.
Writes results/qwen3-vl-<date>.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hybrid_check import phase_rows

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "src" / "memfit" / "catalog" / "models"
MODELS = ("Qwen3-VL-4B-Instruct", "Qwen3-VL-8B-Instruct", "Qwen3-VL-30B-A3B-Instruct")
TEXT_CASES = ((1, 4096, 0, "sdpa"), (2, 2048, 16, "sdpa"), (1, 8192, 0, "eager"))
"""(batch, prompt tokens, new tokens, attention) per model, text only."""
IMAGE_CASES = ((1, 64, 1, (512, 512)), (1, 64, 2, (768, 1024)), (1, 64, 1, (720, 1280)),
               (1, 64, 2, (300, 700)))
"""(batch, text tokens, images per sequence, (height, width)) per model."""


def _cut(config: dict[str, Any], *, layers: int, blocks: int | None = None,
         vocab: int | None = None) -> dict[str, Any]:
    out = json.loads(json.dumps(config))
    out["text_config"]["num_hidden_layers"] = layers
    if blocks is not None:
        out["vision_config"]["depth"] = blocks
        out["vision_config"]["deepstack_visual_indexes"] = list(range(min(3, blocks - 1)))
    if vocab is not None:   # the special token ids moved to the vocabulary's end
        out["text_config"]["vocab_size"] = vocab
        for offset, key in enumerate(("image_token_id", "video_token_id", "vision_start_token_id",
                                      "vision_end_token_id")):
            out[key] = vocab - 4 + offset
        out["text_config"]["bos_token_id"] = out["text_config"]["eos_token_id"] = vocab - 5
    return out


def _spec(name: str, config: dict[str, Any]) -> Any:
    from memfit.core.families import spec_from_config
    from memfit.core.spec import ModelSource

    text = json.dumps(config)
    return spec_from_config(config, name=name, source=ModelSource(kind="config", ref=name, config_json=text))


def _param_row(name: str, config: dict[str, Any]) -> str:
    from memfit.core.params import count_params
    from memfit.trace.meta import count_params_on_meta

    ours, meta = count_params(_spec(name, config)), count_params_on_meta(config)
    same = "every component equal" if ours.flat() == meta.flat() else "COMPONENTS DIFFER"
    return f"| {name} | params | {ours.num_params:,} | {meta.num_params:,} | " \
           f"{(ours.num_params - meta.num_params) / meta.num_params:+.2%} ({same}) |"


def _text_rows(name: str, config: dict[str, Any]) -> list[str]:
    from memfit.core.choices import AttnImpl
    from memfit.core.workload import Inference

    cut = _cut(config, layers=4)
    spec = _spec(f"{name}-4-layers", cut)
    rows = []
    for batch, prompt, new, attn in TEXT_CASES:
        workload = Inference(prompt_tokens=prompt, new_tokens=new, batch_size=batch, attn=AttnImpl(attn))
        rows += phase_rows(f"{name} (4 layers)", f"text b{batch} p{prompt} n{new} {attn}", spec, workload)
    return rows


def real_cpu_working_set(spec: Any, config: dict[str, Any], workload: Any) -> int:
    """The prefill's peak allocated bytes less the loaded weights, the real model on CPU tensors (fp32)."""
    import torch

    from memfit.core.dtypes import DType
    from memfit.core.vision import resized
    from memfit.core.vision_tower import decoder_workload, image_tokens
    from memfit.trace import harness
    from memfit.trace.tracker import real_prefill_bytes

    vision = spec.vision
    torch.manual_seed(0)
    model = harness.build_model(spec.source.config_json, decoder_workload(spec, workload), DType.FP32, "cpu")
    height, width = resized(vision, workload.image_size)
    grid_h, grid_w = height // vision.patch_size, width // vision.patch_size
    batch, images = workload.batch_size, workload.images
    per_image = image_tokens(spec, workload) // images
    image_id, end_id = config["image_token_id"], config["vision_end_token_id"]
    parts = []
    for _ in range(images):   # each image's placeholders closed by <|vision_end|>, as the processor writes
        parts += [torch.full((batch, per_image), image_id), torch.full((batch, 1), end_id)]
    ids = torch.cat([*parts, torch.randint(0, 100, (batch, workload.prompt_tokens - images))], dim=1)
    types = (ids == image_id).long()
    count = batch * images
    pixels = torch.randn(count * grid_h * grid_w,
                         vision.num_channels * vision.temporal_patch_size * vision.patch_size ** 2)
    grid = torch.tensor([[1, grid_h, grid_w]] * count)
    return real_prefill_bytes(model, lambda: model(input_ids=ids, pixel_values=pixels, image_grid_thw=grid,
                                                   mm_token_type_ids=types, use_cache=True, logits_to_keep=1))


def _image_rows(name: str, config: dict[str, Any]) -> list[str]:
    from memfit.core.choices import AttnImpl, PhaseName
    from memfit.core.estimate import estimate
    from memfit.core.workload import Inference

    cut = _cut(config, layers=2, blocks=4, vocab=4096)
    cut["dtype"] = cut["text_config"]["dtype"] = "float32"
    spec = _spec(f"{name}-cut", cut)
    rows = []
    for batch, prompt, images, size in IMAGE_CASES:
        workload = Inference(prompt_tokens=prompt, images=images, image_size=size, batch_size=batch,
                             attn=AttnImpl.EAGER)
        ours = estimate(spec, workload).phase(PhaseName.PREFILL)
        fixed = ours.memory.bytes_of("weights") + ours.memory.bytes_of("runtime_overhead")
        a, r = ours.allocated_bytes - fixed, real_cpu_working_set(spec, cut, workload)
        rows.append(f"| {name} (tower 4 blocks, 2 layers) | b{batch} {images}x{size[0]}x{size[1]} + {prompt} "
                    f"text, eager fp32, prefill working set at {ours.at} | {a / 2**30:.3f} GiB | "
                    f"{r / 2**30:.3f} GiB (real CPU) | {(a - r) / r:+.2%} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", default="", help="check only the models whose name contains this")
    args = parser.parse_args()
    lines = ["# Qwen3-VL: parameters vs the meta device, analytic vs trace (text) and vs real CPU tensors "
             "(images)", "", "| model | case | analytic | trace / meta / real | error |",
             "|---|---|---:|---:|---:|"]
    for name in MODELS:
        if args.only not in name:
            continue
        config = json.loads((CATALOG / f"{name}.json").read_text())
        lines.append(_param_row(name, config))
        lines.extend(_text_rows(name, config))
        lines.extend(_image_rows(name, config))
        print("\n".join(lines[-12:]), flush=True)
    out = args.out / f"qwen3-vl-{datetime.date.today().isoformat()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(out)


if __name__ == "__main__":
    main()
