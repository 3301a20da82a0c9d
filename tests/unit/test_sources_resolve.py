"""load_model resolves catalog → local path → Hub id → ModelNotFound with close catalog names (DESIGN §6)."""

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
from huggingface_hub import errors as hf_errors

from memfit.core.errors import ModelNotFound, UnsupportedArchitecture
from memfit.sources import catalog, resolve
from memfit.sources.resolve import load_model

FIXTURES = Path(__file__).parent.parent / "data" / "fixtures"
HUB_SPEC: Any = "hub-spec"
"""What the stand-in Hub loader returns (Any: load_model is typed to return a ModelSpec)."""
CACHED = ("_model_entries", "_model_index", "_load_entry", "_gpus", "_gpu_index")


@pytest.fixture(autouse=True)
def fixture_catalog(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The one-model fixture catalog, and a Hub that records calls instead of loading."""
    for name in CACHED:
        getattr(catalog, name).cache_clear()
    monkeypatch.setattr(catalog, "_catalog_files", lambda: FIXTURES / "catalog")
    yield
    for name in CACHED:
        getattr(catalog, name).cache_clear()


@pytest.fixture
def hub_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, object]]]:
    """Replace the Hub loader with one that records its arguments and returns a marker."""
    calls: list[tuple[str, dict[str, object]]] = []

    def fake_hub(repo_id: str, **kwargs: object) -> object:
        calls.append((repo_id, kwargs))
        return HUB_SPEC

    monkeypatch.setattr(resolve, "load_hub_model", fake_hub)
    return calls


def test_catalog_comes_first(hub_calls: list[tuple[str, dict[str, object]]]) -> None:
    """A catalog repo id is served from the catalog even though it looks like a Hub id."""
    spec = load_model("memfit-test/Tiny-Llama")
    assert (spec.source.kind, spec.name) == ("catalog", "Tiny-Llama")
    assert hub_calls == []


def test_catalog_name_pinned_elsewhere_goes_to_the_hub(
    hub_calls: list[tuple[str, dict[str, object]]],
) -> None:
    """--revision other than the catalog's fetches the catalog's repo id at that revision from the Hub."""
    assert load_model("Tiny-Llama", revision="v2") == HUB_SPEC
    assert hub_calls == [
        ("memfit-test/Tiny-Llama", {"revision": "v2", "offline": False, "trust_remote_code": False})
    ]


def test_variant_pinned_elsewhere_goes_to_the_hub_under_its_own_repo_id(
    hub_calls: list[tuple[str, dict[str, object]]],
) -> None:
    """--revision other than a variant's fetches the variant's repo id (not its base's) from the Hub."""
    assert load_model("Tiny-Llama-Instruct", revision="v9") == HUB_SPEC
    assert hub_calls == [
        ("memfit-test/Tiny-Llama-Instruct", {"revision": "v9", "offline": False, "trust_remote_code": False})
    ]


def test_not_causal_name_is_refused_before_the_hub(hub_calls: list[tuple[str, dict[str, object]]]) -> None:
    """A listed encoder-decoder's repo id is refused with its one line; the Hub is not asked."""
    with pytest.raises(UnsupportedArchitecture, match=r"^memfit-test/Tiny-T5: model_type 't5' is an encoder"):
        load_model("memfit-test/Tiny-T5")
    assert hub_calls == []


def test_existing_path_beats_hub_id(
    hub_calls: list[tuple[str, dict[str, object]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder named like org/name that exists is loaded locally, not from the Hub."""
    shutil.copytree(FIXTURES / "tiny-llama", tmp_path / "org" / "name")
    monkeypatch.chdir(tmp_path)
    spec = load_model("org/name")
    assert (spec.source.kind, spec.name) == ("folder", "name")
    assert hub_calls == []


def test_hub_id_passes_flags(hub_calls: list[tuple[str, dict[str, object]]]) -> None:
    """An org/name not in the catalog nor on disk goes to the Hub with revision, offline and trust flags."""
    assert load_model("someorg/some-model", revision="abc", offline=True, trust_remote_code=True) == HUB_SPEC
    assert hub_calls == [
        ("someorg/some-model", {"revision": "abc", "offline": True, "trust_remote_code": True})
    ]


def test_unknown_name_lists_close_catalog_models(hub_calls: list[tuple[str, dict[str, object]]]) -> None:
    """A bare unknown name is ModelNotFound naming the closest catalog model, one line."""
    with pytest.raises(
        ModelNotFound, match=r"no model named 'Tiny-Lama'; closest catalog models: Tiny-Llama"
    ) as info:
        load_model("Tiny-Lama")
    assert "\n" not in str(info.value)


def test_missing_path_is_model_not_found(hub_calls: list[tuple[str, dict[str, object]]]) -> None:
    """A path-like reference that does not exist is ModelNotFound 'no such file or folder'."""
    with pytest.raises(ModelNotFound, match=r"no such file or folder: ./nope/config.json"):
        load_model("./nope/config.json")


def test_empty_reference(hub_calls: list[tuple[str, dict[str, object]]]) -> None:
    """An empty reference is ModelNotFound, not a crash."""
    with pytest.raises(ModelNotFound, match=r"empty model name"):
        load_model("  ")


def test_unreachable_hub_id_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: an uncached Hub id with offline=True is ModelNotFound and never goes online."""
    calls: list[bool] = []

    def download(
        repo_id: str,
        filename: str,
        *,
        revision: str | None = None,
        local_files_only: bool = False,
        token: str | None = None,
    ) -> str:
        calls.append(local_files_only)
        raise hf_errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(ModelNotFound, match=r"offline mode is on; run once without --offline"):
        load_model("someorg/uncached-model", offline=True)
    assert calls == [True]


def test_importing_sources_loads_no_optional_stack() -> None:
    """`import memfit.sources` leaves huggingface_hub, gguf, numpy, torch and transformers unimported."""
    heavy = "('huggingface_hub', 'gguf', 'numpy', 'torch', 'transformers')"
    code = f"import sys, memfit.sources; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_local_paths_can_be_refused(
    hub_calls: list[tuple[str, dict[str, object]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With local_paths=False (server mode) an existing org/name folder goes to the Hub; a path is refused."""
    shutil.copytree(FIXTURES / "tiny-llama", tmp_path / "org" / "name")
    monkeypatch.chdir(tmp_path)
    assert load_model("org/name", local_paths=False) == HUB_SPEC
    with pytest.raises(ModelNotFound, match=r"local paths are not accepted here"):
        load_model(str(tmp_path / "org" / "name"), local_paths=False)
