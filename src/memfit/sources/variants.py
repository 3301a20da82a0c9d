"""Post-training variants of catalog models: which other names a catalog config.json answers for, and why.

Instruction, chat, preference or reasoning tuning (SFT, RLHF, DPO; the "-Instruct", "-chat", "-it",
"-Thinking" releases) and the release of the pre-trained base under its own name ("-Base", Gemma 3's "-pt")
retrain the weights but keep every tensor: the variant's config.json carries the same architecture keys
(hidden sizes, heads, layers, vocabulary), so its parameter count and memory are the base's. What may differ
is metadata some releases change (end-of-sequence ids, the context length a release is published for, its
RoPE base), never a shape. A variant therefore resolves offline to its catalog config only when

1. its name is the catalog name with post-training markers (`POST_TRAINING_MARKERS`) added, removed or
   swapped (`variant_kind`); a YYMM release tag right after a marker (`Qwen3-4B-Instruct-2507`) names the
   release, not another architecture; and
2. it is listed under its catalog entry in `models.json` ("variants"), where its own published config.json
   was checked: keys it publishes differently are recorded in "differs" (only `DIFFERS_KEYS`, none of which
   sets a parameter's shape; tests check the count is the base's) and applied. A same-named release whose
   shapes differ is not listed: Mixtral-8x22B-Instruct-v0.1 speaks Mistral's v3 tokenizer (its model card:
   `MistralTokenizer.v3()`, 32,768 tokens) where its base has 32,000 embedding rows.
"""

from __future__ import annotations

import re

POST_TRAINING_MARKERS: dict[str, str] = {
    "instruct": "instruct variants",
    "chat": "chat variants",
    "it": "instruction-tuned (-it) variants",
    "thinking": "reasoning (-Thinking) variants",
    "sft": "SFT checkpoints",
    "dpo": "DPO checkpoints",
    "base": "",
    "pt": "",
}
"""Name parts (case-insensitive, between '-') that mark a training stage of one architecture, and how the
assumption line words a variant that adds them. Each is a stage, not an architecture: instruction, chat,
preference and reasoning tuning start from the pre-trained weights and keep their shapes. "base" and "pt"
name the pre-trained release itself."""

_BASE_RELEASE_RULE = "base releases share the config of their post-trained releases"

_RELEASE_TAG = re.compile(r"^[0-9]{4}$")
"""A YYMM release tag (2407, 2501, 2507) right after a marker: the month of that release."""

DIFFERS_KEYS = frozenset({
    "bos_token_id", "eos_token_id", "pad_token_id", "max_position_embeddings", "rope_theta", "rope_scaling",
    "sliding_window", "use_sliding_window", "max_window_layers", "rms_norm_eps", "torch_dtype",
    "transformers_version", "use_cache",
})
"""config.json keys a listed variant may publish differently from its base: token ids, the context length
and RoPE settings it is released for, norm epsilon, dtype and bookkeeping. None sets a parameter's shape
for the rotary-position families whose variants are listed (learned-position tables, GPT-2 and OPT, would:
they have no listed variants)."""


def _core_parts(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(name parts without markers and their release tags, the markers found), all lower-case."""
    core: list[str] = []
    markers: list[str] = []
    after_marker = False
    for part in name.strip().rsplit("/", 1)[-1].lower().split("-"):
        if part in POST_TRAINING_MARKERS:
            markers.append(part)
            after_marker = True
            continue
        if not (after_marker and _RELEASE_TAG.match(part)):
            core.append(part)
        after_marker = False
    return tuple(core), tuple(markers)


def variant_kind(base: str, variant: str) -> str | None:
    """Why `variant` shares the catalog config `base` ("instruct variants share the base config"), or None
    when the names differ by more than post-training markers and their release tags.

    The rule names the first post-training marker the variant has and the base lacks; a variant that only
    drops one or adds "base"/"pt" is the pre-trained release of a post-trained catalog entry.
    """
    base_core, base_markers = _core_parts(base)
    variant_core, variant_markers = _core_parts(variant)
    if base_core != variant_core or base_markers == variant_markers:
        return None
    added = [m for m in variant_markers if m not in base_markers]
    post_trained = [m for m in added if POST_TRAINING_MARKERS[m]]
    if post_trained:
        return f"{POST_TRAINING_MARKERS[post_trained[0]]} share the base config"
    return _BASE_RELEASE_RULE


def resolution_note(variant: str, base: str, *, kind: str, differs: dict[str, object]) -> str:
    """The assumption line of a resolved variant: what it resolved to, by which rule, what was applied."""
    note = f"{variant}: same shapes as catalog {base} ({kind}: post-training does not change shapes)"
    if not differs:
        return note
    published = ", ".join(f"{key} {value!r}" for key, value in sorted(differs.items()))
    return f"{note}; its own config.json publishes {published}, applied here"
