"""Post-training variants resolve to their catalog config (base, instruct, chat, -it, Hub id, any case), each
says which config it resolved to and why, and only names that differ by post-training markers qualify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memfit import estimate
from memfit.core.errors import ModelNotFound
from memfit.core.params import count_params
from memfit.core.workload import Inference
from memfit.sources import catalog
from memfit.sources.resolve import load_model
from memfit.sources.variants import DIFFERS_KEYS, resolution_note, variant_kind

CATALOG_DIR = Path(__file__).resolve().parents[2] / "src" / "memfit" / "catalog"
ENTRIES = json.loads((CATALOG_DIR / "models.json").read_text(encoding="utf-8"))["models"]
VARIANTS = [(entry["name"], variant) for entry in ENTRIES for variant in entry.get("variants", [])]


@pytest.mark.parametrize(
    ("base", "variant", "rule"),
    [
        ("Llama-3.1-8B", "Llama-3.1-8B-Instruct", "instruct variants share the base config"),
        ("Llama-2-70b-hf", "Llama-2-70b-chat-hf", "chat variants share the base config"),
        ("gemma-2-9b", "gemma-2-9b-it", "instruction-tuned (-it) variants share the base config"),
        ("Qwen3-4B", "Qwen3-4B-Instruct-2507", "instruct variants share the base config"),
        ("Qwen3-4B", "Qwen3-4B-Thinking-2507", "reasoning (-Thinking) variants share the base config"),
        ("Mistral-7B-v0.3", "Mistral-7B-Instruct-v0.3", "instruct variants share the base config"),
        ("Mistral-Small-24B-Base-2501", "Mistral-Small-24B-Instruct-2501",
         "instruct variants share the base config"),
        ("gemma-2-2b-it", "gemma-2-2b", "base releases share the config of their post-trained releases"),
        ("gemma-3-1b-it", "gemma-3-1b-pt", "base releases share the config of their post-trained releases"),
        ("DeepSeek-V3", "deepseek-ai/DeepSeek-V3-Base",
         "base releases share the config of their post-trained releases"),
    ],
)
def test_variant_kind_names_the_post_training_rule(base: str, variant: str, rule: str) -> None:
    """Names that differ only by post-training markers (and a release tag after one) are variants."""
    assert variant_kind(base, variant) == rule


@pytest.mark.parametrize(
    ("base", "other"),
    [
        ("Llama-3.1-8B", "Llama-3.1-8B"),                 # the same name is not a variant of itself
        ("Llama-3.1-8B", "Llama-3.1-70B-Instruct"),       # another size
        ("CodeLlama-7b-hf", "CodeLlama-7b-Python-hf"),    # a specialisation (vocab 32000, not 32016)
        ("Qwen2.5-7B", "Qwen2.5-Coder-7B-Instruct"),      # another model line
        ("Qwen3-4B", "Qwen3-4B-2507"),                    # a bare release tag names no post-training stage
        ("gpt2", "gpt2-medium"),
        ("Qwen3-30B-A3B", "Qwen3-30B-A3B-Thinking-2507-FP8"),  # pre-quantized: other tensors
    ],
)
def test_other_models_are_not_variants(base: str, other: str) -> None:
    """A size, a line or a specialisation is a different architecture, never resolved to `base`."""
    assert variant_kind(base, other) is None


@pytest.mark.parametrize(
    "ref",
    ["Llama-3.1-8B-Instruct", "llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct",
     "META-LLAMA/LLAMA-3.1-8B-INSTRUCT"],
)
def test_instruct_name_and_hub_id_resolve_in_any_case(ref: str) -> None:
    """Name and Hub id of a listed variant, any case, give its spec with the rule in its assumptions."""
    spec = load_model(ref, offline=True)
    assert (spec.name, spec.source.kind, spec.source.ref) == (
        "Llama-3.1-8B-Instruct", "catalog", "meta-llama/Llama-3.1-8B-Instruct")
    assert spec.assumptions == (
        "Llama-3.1-8B-Instruct: same shapes as catalog Llama-3.1-8B (instruct variants share the base "
        "config: post-training does not change shapes)",)


def test_chat_variant_of_llama_2_has_the_base_shapes() -> None:
    """Llama-2-70b-chat-hf counts exactly the catalog Llama-2-70b-hf's 68,976,648,192 parameters."""
    chat = load_model("meta-llama/Llama-2-70b-chat-hf", offline=True)
    base = load_model("Llama-2-70b-hf", offline=True)
    assert chat.name == "Llama-2-70b-chat-hf"
    assert count_params(chat).num_params == count_params(base).num_params == 68_976_648_192


def test_base_name_still_resolves_to_the_base_without_a_note() -> None:
    """The catalog's own name is the base, with its own repo id and no resolution note."""
    spec = load_model("Llama-3.2-3B", offline=True)
    assert (spec.name, spec.source.ref, spec.assumptions) == ("Llama-3.2-3B", "meta-llama/Llama-3.2-3B", ())


def test_published_differences_are_applied_and_stated() -> None:
    """Qwen2.5-7B-Instruct is published for 32,768 tokens (its base for 131,072): the limit follows it."""
    instruct = load_model("Qwen/Qwen2.5-7B-Instruct", offline=True)
    base = load_model("Qwen2.5-7B", offline=True)
    assert (instruct.max_position_embeddings, base.max_position_embeddings) == (32_768, 131_072)
    assert json.loads(instruct.source.config_json or "{}")["max_position_embeddings"] == 32_768
    assert instruct.assumptions[0].endswith(
        "its own config.json publishes max_position_embeddings 32768, applied here")


def test_estimate_assumptions_name_the_resolution() -> None:
    """An estimate of a variant lists the resolution line among its assumptions."""
    est = estimate("Llama-3.2-3B-Instruct", Inference(prompt_tokens=128))
    assert est.model.name == "Llama-3.2-3B-Instruct"
    assert any(line.startswith("Llama-3.2-3B-Instruct: same shapes as catalog Llama-3.2-3B") for line in
               est.assumptions)


def test_a_release_with_other_shapes_is_not_listed() -> None:
    """Mixtral-8x22B-Instruct-v0.1 (vocab 32768, its base 32000) is not resolved offline to the base."""
    assert catalog.catalog_model_entry("Mixtral-8x22B-Instruct-v0.1") is None
    with pytest.raises(ModelNotFound, match=r"no model named 'Mixtral-8x22B-Instruct-v0\.1'"):
        load_model("Mixtral-8x22B-Instruct-v0.1", offline=True)


def test_close_matches_include_variant_names() -> None:
    """A typo of a variant name suggests the variant."""
    with pytest.raises(ModelNotFound, match=r"closest catalog models: Llama-3\.1-8B-Instruct"):
        load_model("Llama-3.1-8B-Instrct", offline=True)


def test_resolution_note_lists_each_applied_key() -> None:
    """The note names the variant, the catalog config, the rule and every key applied, sorted."""
    note = resolution_note("X-Instruct", "X", kind="instruct variants share the base config",
                           differs={"rope_theta": 5_000_000, "max_position_embeddings": 262_144})
    assert note == ("X-Instruct: same shapes as catalog X (instruct variants share the base config: "
                    "post-training does not change shapes); its own config.json publishes "
                    "max_position_embeddings 262144, rope_theta 5000000, applied here")


@pytest.mark.parametrize(("base", "variant"), VARIANTS, ids=[v["repo_id"] for _, v in VARIANTS])
def test_every_listed_variant_follows_the_rule_and_counts_as_its_base(base: str, variant: dict) -> None:
    """Each listed variant is a post-training variant by name, differs only in non-shape keys, is sourced,
    and counts exactly as many parameters as its catalog base."""
    name = variant["repo_id"].rsplit("/", 1)[-1]
    assert variant_kind(base, name) is not None
    assert set(variant["differs"]) <= DIFFERS_KEYS
    assert variant["provenance"]
    assert isinstance(variant["gated"], bool)
    spec = load_model(variant["repo_id"], offline=True)
    assert count_params(spec).num_params == count_params(load_model(base, offline=True)).num_params


def test_variant_names_do_not_shadow_catalog_entries() -> None:
    """No listed variant's name or repo id is also a catalog entry's, whatever the case."""
    entry_keys = {key.lower() for entry in ENTRIES for key in (entry["name"], entry["repo_id"])}
    variant_keys = {key.lower() for _, v in VARIANTS
                    for key in (v["repo_id"], v["repo_id"].rsplit("/", 1)[-1])}
    assert entry_keys & variant_keys == set()
    assert len(variant_keys) == 2 * len(VARIANTS)


def test_catalog_listing_shows_aliases() -> None:
    """catalog_models() gives each entry the names and repo ids of its variants as aliases."""
    by_name = {m["name"]: m for m in catalog.catalog_models()}
    assert by_name["Llama-2-70b-hf"]["aliases"] == ["Llama-2-70b-chat-hf", "meta-llama/Llama-2-70b-chat-hf"]
    assert by_name["gpt2"]["aliases"] == []


CHECKPOINT_TOTALS = [(base, v) for base, v in VARIANTS if "checkpoint_params" in v]


@pytest.mark.parametrize(("base", "variant"), CHECKPOINT_TOTALS,
                         ids=[v["repo_id"] for _, v in CHECKPOINT_TOTALS])
def test_variant_counts_equal_their_published_checkpoint_totals(base: str, variant: dict) -> None:
    """Where a variant's safetensors tensor total is on record, the count of its resolved spec equals it:
    the variant really has its base's shapes."""
    spec = load_model(variant["repo_id"], offline=True)
    assert count_params(spec).num_params == variant["checkpoint_params"]


PUBLISHED = [entry for entry in ENTRIES if entry["published_params"] is not None]


@pytest.mark.parametrize("entry", PUBLISHED, ids=[entry["name"] for entry in PUBLISHED])
def test_catalog_counts_equal_published_totals(entry: dict) -> None:
    """A catalog model's count equals the published checkpoint total it records."""
    assert count_params(load_model(entry["name"], offline=True)).num_params == entry["published_params"]
