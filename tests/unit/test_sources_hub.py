"""Hub ids → ModelSpec, huggingface_hub mocked: cache first, offline honoured, each failure one typed line."""

import json
import shutil
from pathlib import Path

import httpx
import huggingface_hub
import pytest
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import (  # type: ignore[attr-defined]  # public, re-exported at run time
    SafetensorsFileMetadata,
    SafetensorsRepoMetadata,
    TensorInfo,
)

from memfit.core.errors import ConfigError, EngineUnavailable, ModelNotFound, UnsupportedArchitecture
from memfit.sources.hub import load_hub_model, looks_like_repo_id

FIXTURES = Path(__file__).parent.parent / "data" / "fixtures"
REPO = "memfit-test/Tiny-Llama"
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"
TINY_BF16_BYTES = 173_696  # 86,848 parameters × 2 B (see test_sources_local.py for the count)


def http_error(cls: type[hf_errors.HfHubHTTPError], status: int) -> Exception:
    """A huggingface_hub HTTP error as the library raises it, with a response of `status`."""
    response = httpx.Response(status, request=httpx.Request("GET", f"https://huggingface.co/{REPO}"))
    return cls(f"HTTP {status}", response=response)


class FakeHub:
    """Stands in for huggingface_hub's download, cache and metadata calls; records every call."""

    def __init__(self, cache: Path, *, cached: bool, remote: Exception | None = None) -> None:
        self.cache, self.cached, self.remote = cache, cached, remote
        self.calls: list[tuple[object, ...]] = []
        self.metadata_error: Exception | None = None

    def hf_hub_download(
        self,
        repo_id: str,
        filename: str,
        *,
        revision: str | None = None,
        local_files_only: bool = False,
        token: str | None = None,
    ) -> str:
        self.calls.append(("download", filename, local_files_only, token))
        if local_files_only and not self.cached:
            raise hf_errors.LocalEntryNotFoundError("not in cache")
        if not local_files_only and self.remote is not None:
            raise self.remote
        return str(self.cache / filename)

    def try_to_load_from_cache(self, repo_id: str, filename: str, revision: str | None = None) -> str | None:
        path = self.cache / filename
        return str(path) if path.is_file() else None

    def get_safetensors_metadata(
        self, repo_id: str, *, revision: str | None = None, token: str | None = None
    ) -> SafetensorsRepoMetadata:
        self.calls.append(("metadata", repo_id, revision, token))
        if self.metadata_error is not None:
            raise self.metadata_error
        header = json.loads((FIXTURES / "hub" / "tiny-llama-model.safetensors.header.json").read_text())
        metadata = header.pop("__metadata__")
        tensors = {
            name: TensorInfo(dtype=e["dtype"], shape=e["shape"], data_offsets=tuple(e["data_offsets"]))
            for name, e in header.items()
        }
        return SafetensorsRepoMetadata(
            metadata=None,
            sharded=False,
            weight_map=dict.fromkeys(tensors, "model.safetensors"),
            files_metadata={"model.safetensors": SafetensorsFileMetadata(metadata=metadata, tensors=tensors)},
        )


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    """A cache snapshot folder (…/snapshots/<hash>/) holding Tiny-Llama's config.json."""
    folder = tmp_path / "models--memfit-test--Tiny-Llama" / "snapshots" / SNAPSHOT
    folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "tiny-llama" / "config.json", folder / "config.json")
    return folder


def install(monkeypatch: pytest.MonkeyPatch, hub: FakeHub) -> FakeHub:
    """Route huggingface_hub's entry points to `hub`; clear HF_TOKEN and HF_HUB_OFFLINE."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", hub.try_to_load_from_cache)
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: hub)
    return hub


def test_cached_config_needs_no_network(monkeypatch: pytest.MonkeyPatch, snapshot: Path) -> None:
    """A cached config is read with local_files_only=True, no network; the snapshot hash is the revision."""
    hub = install(monkeypatch, FakeHub(snapshot, cached=True))
    spec = load_hub_model(REPO, offline=True)
    assert (spec.name, spec.family, spec.num_layers) == ("Tiny-Llama", "llama", 2)
    assert (spec.source.kind, spec.source.ref, spec.source.revision) == ("hub", REPO, SNAPSHOT)
    assert hub.calls == [("download", "config.json", True, None)]
    assert spec.checkpoint is None


def test_uncached_config_downloads_with_token_and_reads_headers(
    monkeypatch: pytest.MonkeyPatch, snapshot: Path
) -> None:
    """Not cached and online: one download with HF_TOKEN, then safetensors metadata: 173,696 B."""
    hub = install(monkeypatch, FakeHub(snapshot, cached=False))
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    spec = load_hub_model(REPO, revision="main")
    assert hub.calls == [
        ("download", "config.json", True, None),
        ("download", "config.json", False, "hf_test"),
        ("metadata", REPO, "main", "hf_test"),
    ]
    assert spec.checkpoint is not None
    assert (spec.checkpoint.total_bytes, len(spec.checkpoint.tensors)) == (TINY_BF16_BYTES, 21)
    assert spec.source.revision == "main"


def test_cached_safetensors_headers_are_read_locally(monkeypatch: pytest.MonkeyPatch, snapshot: Path) -> None:
    """A cached model.safetensors is described from its own header, without the metadata endpoint."""
    from tests.unit.test_sources_local import tiny_tensors, write_safetensors

    write_safetensors(snapshot / "model.safetensors", tiny_tensors())
    hub = install(monkeypatch, FakeHub(snapshot, cached=True))
    spec = load_hub_model(REPO)
    assert spec.checkpoint is not None
    assert spec.checkpoint.total_bytes == TINY_BF16_BYTES
    assert all(call[0] != "metadata" for call in hub.calls)


def test_metadata_failure_leaves_checkpoint_empty(monkeypatch: pytest.MonkeyPatch, snapshot: Path) -> None:
    """A repo without safetensors (or a failed header read) still gives the config's spec."""
    hub = install(monkeypatch, FakeHub(snapshot, cached=True))
    hub.metadata_error = hf_errors.NotASafetensorsRepoError("no safetensors")
    assert load_hub_model(REPO).checkpoint is None


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_offline_miss_is_model_not_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str) -> None:
    """An uncached id offline (offline=True or HF_HUB_OFFLINE=1) says to run once online or give a path."""
    hub = install(monkeypatch, FakeHub(tmp_path, cached=False))
    if how == "environment":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ModelNotFound, match=r"not in the local Hugging Face cache and offline mode is on"
    ) as info:
        load_hub_model(REPO, offline=how == "argument")
    assert "\n" not in str(info.value)
    assert [call[2] for call in hub.calls] == [True]


def test_gated_repo_says_how_to_log_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A gated repo is ModelNotFound telling the user to accept the licence and log in or set HF_TOKEN."""
    install(monkeypatch, FakeHub(tmp_path, cached=False, remote=http_error(hf_errors.GatedRepoError, 403)))
    match = r"gated: accept its licence at https://huggingface.co/memfit-test/Tiny-Llama.*login.*HF_TOKEN"
    with pytest.raises(ModelNotFound, match=match):
        load_hub_model(REPO)


def test_missing_repo_is_model_not_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A 404 repo is ModelNotFound naming the id."""
    install(
        monkeypatch,
        FakeHub(tmp_path, cached=False, remote=http_error(hf_errors.RepositoryNotFoundError, 404)),
    )
    with pytest.raises(ModelNotFound, match=r"no Hub repo memfit-test/Tiny-Llama"):
        load_hub_model(REPO)


def test_missing_revision_is_model_not_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An unknown --revision is ModelNotFound naming it."""
    install(
        monkeypatch, FakeHub(tmp_path, cached=False, remote=http_error(hf_errors.RevisionNotFoundError, 404))
    )
    with pytest.raises(ModelNotFound, match=r"has no revision 'v9'"):
        load_hub_model(REPO, revision="v9")


def test_unreachable_hub_is_engine_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network and no cache (huggingface_hub's LocalEntryNotFoundError online) is EngineUnavailable."""
    install(monkeypatch, FakeHub(tmp_path, cached=False, remote=hf_errors.LocalEntryNotFoundError("offline")))
    with pytest.raises(EngineUnavailable, match=r"could not reach the Hugging Face Hub .*local path") as info:
        load_hub_model(REPO)
    assert "\n" not in str(info.value)


def test_malformed_hub_config_is_config_error(monkeypatch: pytest.MonkeyPatch, snapshot: Path) -> None:
    """A cached config.json that is not JSON is a ConfigError naming the repo and line."""
    (snapshot / "config.json").write_text("{\n  oops\n}")
    install(monkeypatch, FakeHub(snapshot, cached=True))
    with pytest.raises(ConfigError, match=r"memfit-test/Tiny-Llama config.json line 2 column 3"):
        load_hub_model(REPO)


def test_remote_code_config_asks_for_the_flag(monkeypatch: pytest.MonkeyPatch, snapshot: Path) -> None:
    """A config with auto_map and an unmapped model_type asks for --trust-remote-code; no code runs."""
    shutil.copy(FIXTURES / "configs" / "remote_code.json", snapshot / "config.json")
    install(monkeypatch, FakeHub(snapshot, cached=True))
    with pytest.raises(UnsupportedArchitecture, match=r"pass --trust-remote-code"):
        load_hub_model(REPO)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("meta-llama/Llama-3.1-8B", True),
        ("Qwen/Qwen2.5-0.5B", True),
        ("Llama-3.1-8B", False),
        ("./models/x", False),
        ("a/b/c", False),
        ("org/config.json", False),
        ("/abs/path", False),
    ],
)
def test_looks_like_repo_id(ref: str, expected: bool) -> None:
    """Only org/name counts as a Hub id; paths and bare names do not."""
    assert looks_like_repo_id(ref) is expected


def test_real_huggingface_hub_cache_layout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Unmocked huggingface_hub finds a config and model.safetensors in a real cache layout, offline."""
    from huggingface_hub import constants
    from tests.unit.test_sources_local import tiny_tensors, write_safetensors

    repo_folder = tmp_path / "models--memfit-test--Tiny-Llama"
    snapshot = repo_folder / "snapshots" / SNAPSHOT
    snapshot.mkdir(parents=True)
    (repo_folder / "refs").mkdir()
    (repo_folder / "refs" / "main").write_text(SNAPSHOT)
    shutil.copy(FIXTURES / "tiny-llama" / "config.json", snapshot / "config.json")
    write_safetensors(snapshot / "model.safetensors", tiny_tensors())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    spec = load_hub_model(REPO, offline=True)
    assert (spec.name, spec.source.revision) == ("Tiny-Llama", SNAPSHOT)
    assert spec.checkpoint is not None
    assert spec.checkpoint.total_bytes == TINY_BF16_BYTES
