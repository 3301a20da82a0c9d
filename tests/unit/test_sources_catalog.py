"""The bundled catalog: models by basename or repo id, GPUs by name, alias or size; unknown names suggest."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from memfit.core.errors import ConfigError, UnknownGpu
from memfit.core.units import GB, GiB
from memfit.sources import catalog

FIXTURE_CATALOG = Path(__file__).parent.parent / "data" / "fixtures" / "catalog"
CACHED = ("_model_entries", "_model_index", "_load_entry", "_gpus", "_gpu_index")


def clear_caches() -> None:
    """Forget every cached catalog read."""
    for name in CACHED:
        getattr(catalog, name).cache_clear()


@pytest.fixture
def fixture_catalog(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the catalog at tests/data/fixtures/catalog (one model, three GPUs) for one test."""
    clear_caches()
    monkeypatch.setattr(catalog, "_catalog_files", lambda: FIXTURE_CATALOG)
    yield FIXTURE_CATALOG
    clear_caches()


@pytest.mark.parametrize(
    "ref", ["Tiny-Llama", "tiny-llama", "memfit-test/Tiny-Llama", "MEMFIT-TEST/tiny-llama"]
)
def test_model_by_basename_or_repo_id_any_case(fixture_catalog: Path, ref: str) -> None:
    """Basename and repo id, in any case, give the same catalog spec with the catalog's revision."""
    spec = catalog.load_catalog_model(ref)
    assert spec is not None
    assert (spec.name, spec.num_layers, spec.source.kind) == ("Tiny-Llama", 2, "catalog")
    assert (spec.source.ref, spec.source.revision) == ("memfit-test/Tiny-Llama", "0123abc")


def test_model_spec_is_cached(fixture_catalog: Path) -> None:
    """Two lookups return the very same ModelSpec object."""
    assert catalog.load_catalog_model("Tiny-Llama") is catalog.load_catalog_model("memfit-test/tiny-llama")


def test_unknown_model_is_none_and_close_names_suggested(fixture_catalog: Path) -> None:
    """An unlisted name is None; 'Tiny-Lama' is close to Tiny-Llama, then to its variant."""
    assert catalog.load_catalog_model("Tiny-Lama") is None
    assert catalog.close_model_names("Tiny-Lama") == ["Tiny-Llama", "Tiny-Llama-Instruct"]


@pytest.mark.parametrize(
    "ref", ["Tiny-Llama-Instruct", "tiny-llama-instruct", "memfit-test/Tiny-Llama-Instruct"]
)
def test_variant_by_name_or_repo_id_gets_its_differences(fixture_catalog: Path, ref: str) -> None:
    """A listed variant resolves to the base config with its published differences, its own repo id and
    revision, and the resolution line."""
    spec = catalog.load_catalog_model(ref)
    assert spec is not None
    assert (spec.name, spec.num_layers, spec.max_position_embeddings) == ("Tiny-Llama-Instruct", 2, 512)
    assert (spec.source.ref, spec.source.revision) == ("memfit-test/Tiny-Llama-Instruct", "4567def")
    assert spec.assumptions[0].startswith(
        "Tiny-Llama-Instruct: same shapes as catalog Tiny-Llama (instruct variants share the base config")
    assert catalog.load_catalog_model("Tiny-Llama") is not spec


def test_variant_entry_names_its_catalog_entry(fixture_catalog: Path) -> None:
    """catalog_model_entry gives a variant's own name, repo id and revision and the entry it belongs to."""
    entry = catalog.catalog_model_entry("TINY-LLAMA-INSTRUCT")
    assert entry is not None
    assert (entry["name"], entry["repo_id"], entry["revision"], entry["variant_of"]) == (
        "Tiny-Llama-Instruct", "memfit-test/Tiny-Llama-Instruct", "4567def", "Tiny-Llama")


def test_variant_with_a_shape_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A variant whose differences touch a shape (hidden_size) is a packaging error, not a silent resize."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "Tiny-Llama.json").write_text(
        (FIXTURE_CATALOG / "models" / "Tiny-Llama.json").read_text())
    (tmp_path / "models.json").write_text(
        '{"schema": "memfit.catalog/1", "models": [{"name": "Tiny-Llama", "repo_id": "t/Tiny-Llama", '
        '"revision": "main", "gated": false, "variants": [{"repo_id": "t/Tiny-Llama-chat", '
        '"differs": {"hidden_size": 128}}]}]}')
    clear_caches()
    monkeypatch.setattr(catalog, "_catalog_files", lambda: tmp_path)
    try:
        with pytest.raises(ConfigError, match="variant Tiny-Llama-chat of Tiny-Llama differs in hidden_size"):
            catalog.load_catalog_model("Tiny-Llama-chat")
    finally:
        clear_caches()


def test_not_causal_names_get_the_refusal_line(fixture_catalog: Path) -> None:
    """A name in "not_causal_lm" gives its one line; other names give None."""
    line = catalog.not_causal_model_line("memfit-test/tiny-t5")
    assert line is not None
    assert line.startswith("memfit-test/tiny-t5: model_type 't5' is an encoder-decoder model; ")
    assert catalog.not_causal_model_line("Tiny-Llama") is None


def test_catalog_models_lists_entries(fixture_catalog: Path) -> None:
    """catalog_models() gives the published entries, copies the caller may change."""
    models = catalog.catalog_models()
    models[0]["name"] = "changed"
    assert [m["name"] for m in catalog.catalog_models()] == ["Tiny-Llama"]


def test_bad_schema_is_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A models.json of another schema version is a ConfigError naming both."""
    (tmp_path / "models.json").write_text('{"schema": "memfit.catalog/2", "models": []}')
    clear_caches()
    monkeypatch.setattr(catalog, "_catalog_files", lambda: tmp_path)
    try:
        with pytest.raises(
            ConfigError, match=r"schema 'memfit.catalog/2'; this memfit reads memfit.catalog/1"
        ):
            catalog.catalog_models()
    finally:
        clear_caches()


@pytest.mark.parametrize(
    "name", ["H100-SXM-80GB", "h100-sxm-80gb", "H100 SXM 80GB", "H100", "h100 80gb hbm3"]
)
def test_gpu_by_name_or_alias(fixture_catalog: Path, name: str) -> None:
    """Name and aliases, in any case and with spaces for dashes, give the H100 SXM entry."""
    gpu = catalog.get_gpu(name)
    assert (gpu.name, gpu.usable_bytes) == ("H100-SXM-80GB", 85_017_493_504)


@pytest.mark.parametrize(
    ("text", "expected_bytes"),
    [
        ("24GiB", 24 * GiB),
        ("80GB", 80 * GB),
        ("80 GB", 80 * GB),
        ("1.5TiB", 3 * 2**39),
    ],
)
def test_anonymous_gpu_size(fixture_catalog: Path, text: str, expected_bytes: int) -> None:
    """A size with a unit is an anonymous GPU whose memory is all usable (24GiB = 25,769,803,776 B)."""
    gpu = catalog.get_gpu(text)
    assert (gpu.memory_bytes, gpu.usable_bytes) == (expected_bytes, expected_bytes)
    assert gpu.name == text.replace(" ", "")


def test_anonymous_gpu_name_is_canonical(fixture_catalog: Path) -> None:
    """'24 gib' is named '24GiB' (binary) and '80 gb' '80GB' (decimal, 80,000,000,000 B)."""
    assert (catalog.get_gpu("24 gib").name, catalog.get_gpu("80 gb").name) == ("24GiB", "80GB")
    assert catalog.get_gpu("80 gb").memory_bytes == 80_000_000_000


def test_missing_catalog_file_is_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A catalog folder without gpus.json (a broken install) is a ConfigError saying to reinstall."""
    clear_caches()
    monkeypatch.setattr(catalog, "_catalog_files", lambda: tmp_path)
    try:
        with pytest.raises(ConfigError, match=r"catalog gpus.json is missing; .*reinstall memfit"):
            catalog.catalog_gpus()
    finally:
        clear_caches()


def test_unknown_gpu_suggests_closest(fixture_catalog: Path) -> None:
    """'H100-80G' is UnknownGpu whose one line names H100-SXM-80GB and H100-PCIe-80GB among the closest."""
    with pytest.raises(UnknownGpu, match=r"no GPU named 'H100-80G'; closest: .*H100-SXM-80GB") as info:
        catalog.get_gpu("H100-80G")
    assert "H100-PCIe-80GB" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["24", "0GiB", "lots"])
def test_bare_number_zero_or_nonsense_is_unknown_gpu(fixture_catalog: Path, text: str) -> None:
    """A bare number (no unit), a zero size or a word is UnknownGpu, not a GPU."""
    with pytest.raises(UnknownGpu, match=r"GPU"):
        catalog.get_gpu(text)


def test_catalog_gpus_in_order(fixture_catalog: Path) -> None:
    """catalog_gpus() lists the fixture's three GPUs in file order."""
    assert [g.name for g in catalog.catalog_gpus()] == ["H100-SXM-80GB", "H100-PCIe-80GB", "RTX-4090"]


def test_bundled_catalog_reads_package_data() -> None:
    """The installed catalog (importlib.resources) serves Llama-3.1-8B by repo id: 32 layers, hidden 4096."""
    clear_caches()
    spec = catalog.load_catalog_model("meta-llama/Llama-3.1-8B")
    assert spec is not None
    assert (spec.name, spec.num_layers, spec.hidden_size, spec.source.kind) == (
        "Llama-3.1-8B",
        32,
        4096,
        "catalog",
    )
