"""The bundled model catalog: a valid index, one published config.json per entry, wide coverage."""

import json
from collections import Counter
from pathlib import Path

import pytest

CATALOG_DIR = Path(__file__).resolve().parents[2] / "src" / "memfit" / "catalog"
MODELS_SCHEMA = "memfit.catalog/1"
MIN_NUM_MODELS = 60

# HF model_type -> the fewest catalog models of that type (issue 4, item 2).
REQUIRED_MODEL_TYPES = {
    "llama": 2,
    "mistral": 2,
    "mixtral": 2,
    "qwen2": 2,
    "qwen2_moe": 2,
    "qwen3": 2,
    "qwen3_moe": 2,
    "gemma": 2,
    "gemma2": 2,
    "gemma3_text": 2,
    "gemma3": 1,
    "phi": 2,
    "phi3": 2,
    "gpt2": 2,
    "gpt_bigcode": 2,
    "gpt_neox": 2,
    "gptj": 1,
    "opt": 2,
    "bloom": 2,
    "falcon": 2,
    "cohere": 2,
    "cohere2": 1,
    "deepseek_v2": 2,
    "deepseek_v3": 2,
    "olmo2": 2,
    "starcoder2": 2,
    "granite": 2,
    "gpt_oss": 2,
}


def load_index() -> dict:
    """models.json as a dict."""
    return json.loads((CATALOG_DIR / "models.json").read_text(encoding="utf-8"))


def load_config(name: str) -> dict:
    """models/<name>.json as a dict."""
    return json.loads((CATALOG_DIR / "models" / f"{name}.json").read_text(encoding="utf-8"))


ENTRIES = load_index()["models"]


def test_index_has_the_catalog_schema():
    """models.json declares schema memfit.catalog/1 and lists at least 60 models."""
    index = load_index()
    assert index["schema"] == MODELS_SCHEMA
    assert len(index["models"]) >= MIN_NUM_MODELS


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_entry_fields_are_well_typed(entry):
    """Each entry names its repo (basename == name), a revision, a gated flag and an int-or-null count."""
    assert entry["repo_id"].count("/") == 1
    assert entry["repo_id"].split("/")[1] == entry["name"]
    assert isinstance(entry["revision"], str)
    assert entry["revision"]
    assert isinstance(entry["gated"], bool)
    published = entry["published_params"]
    assert published is None or (isinstance(published, int) and published > 0)
    assert (published is None) == (entry["published_params_source"] is None)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_every_entry_has_its_config_with_the_same_model_type(entry):
    """models/<name>.json exists, is a JSON object and carries the model_type the index states."""
    config = load_config(entry["name"])
    assert isinstance(config, dict)
    assert config["model_type"] == entry["model_type"]


def test_names_are_unique_ignoring_case():
    """No two entries share a name or a repo id, whatever the case."""
    names = Counter(e["name"].lower() for e in ENTRIES)
    repos = Counter(e["repo_id"].lower() for e in ENTRIES)
    assert [n for n, k in names.items() if k > 1] == []
    assert [r for r, k in repos.items() if k > 1] == []


def test_no_config_file_is_left_out_of_the_index():
    """Every models/*.json file is listed in models.json."""
    files = {p.stem for p in (CATALOG_DIR / "models").glob("*.json")}
    assert files == {e["name"] for e in ENTRIES}


def test_every_required_family_is_present():
    """Each required HF model_type has at least its minimum number of catalog models."""
    counts = Counter(e["model_type"] for e in ENTRIES)
    short = {t: counts[t] for t, need in REQUIRED_MODEL_TYPES.items() if counts[t] < need}
    assert short == {}


def test_smallest_size_is_below_0_2b():
    """gpt2 has 124,439,808 parameters, under 0.2B.

    Hand count (h=768, L=12, V=50257, P=1024; tied head): embeddings V*h + P*h = 38,597,376 + 786,432;
    per layer 12h^2 + 13h = 7,077,888 + 9,984, times 12 = 85,054,464; final LayerNorm 2h = 1,536;
    total 124,439,808.
    """
    c = load_config("gpt2")
    h, num_layers = c["n_embd"], c["n_layer"]
    num_params = c["vocab_size"] * h + c["n_positions"] * h + num_layers * (12 * h * h + 13 * h) + 2 * h
    assert num_params == 124_439_808
    assert num_params < 200_000_000


def test_largest_size_is_above_600b():
    """DeepSeek-V3's routed experts alone hold more than 600B parameters.

    Hand count: (61 - 3 dense) = 58 MoE layers x 256 experts x 3 matrices x 7168 x 2048
    = 58 x 256 x 44,040,192 = 653,908,770,816.
    """
    c = load_config("DeepSeek-V3")
    num_moe_layers = c["num_hidden_layers"] - c["first_k_dense_replace"]
    expert_params = 3 * c["hidden_size"] * c["moe_intermediate_size"]
    num_routed_params = num_moe_layers * c["n_routed_experts"] * expert_params
    assert num_routed_params == 653_908_770_816
    assert num_routed_params > 600_000_000_000


def test_mistral_7b_v0_1_keeps_its_sliding_window():
    """Mistral-7B-v0.1 is published with sliding_window 4096 (v0.3 dropped it: null)."""
    assert load_config("Mistral-7B-v0.1")["sliding_window"] == 4096
    assert load_config("Mistral-7B-v0.3")["sliding_window"] is None


def test_opt_350m_projects_embeddings():
    """opt-350m embeds in 512 dims and projects to hidden 1024 (word_embed_proj_dim != hidden_size)."""
    c = load_config("opt-350m")
    assert (c["word_embed_proj_dim"], c["hidden_size"]) == (512, 1024)


def test_readme_states_the_catalog_size():
    """README's sentence on the bundled catalog names the number of configs models.json lists."""
    readme = (CATALOG_DIR.parents[2] / "README.md").read_text(encoding="utf-8")
    assert f"bundled catalog ({len(ENTRIES)} configs" in readme
