"""Hugging Face Hub ids → ModelSpec: config.json and safetensors headers, never weights; cache first.

The config comes from the local Hugging Face cache when it is there (`local_files_only=True`), and from the
network only when it is missing and neither `offline=True` nor `HF_HUB_OFFLINE=1` forbids it. The tensors
come from safetensors headers: read from cached files when the cache holds them, else from the Hub's
metadata endpoint (ranged reads of the headers, `HfApi.get_safetensors_metadata`); a checkpoint that cannot
be described this way leaves `ModelSpec.checkpoint` empty rather than failing. `HF_TOKEN` (or a stored
`huggingface-cli login`) authenticates gated repos. `huggingface_hub` is imported inside functions only.

Offline means no network call of any kind: huggingface_hub runs in its own offline mode for the duration
(`offline_hub`), which also stops the agent-registry fetch behind the user-agent header that even its cache
lookups build. Online, a step that gets no answer within `HUB_TIMEOUT_S` fails with one line instead of
waiting out the library's retries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from memfit.core.errors import EngineUnavailable, ModelNotFound
from memfit.core.spec import CheckpointInfo, ModelSource, ModelSpec, TensorInfo
from memfit.sources._config import build_spec, quant_method, read_config
from memfit.sources.safetensors import (
    load_safetensors_checkpoint,
    load_safetensors_index,
    read_weight_map,
    tensors_from_header,
)

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""`org/name` as the Hub spells repo ids (letters, digits, '-', '_', '.'); one slash."""

_TRUE_ENV = {"1", "true", "yes", "on"}

HUB_TIMEOUT_S = 5.0
"""Seconds one online Hub step (the config download, the safetensors header read) may take; then memfit
gives up with one line. Override with MEMFIT_HUB_TIMEOUT. Needed because huggingface_hub retries a failed
first request with backoff for about 25 s (file_download._ETAG_RETRY_TIMEOUT and http_backoff's 1+2+4+8+8 s
waits, huggingface_hub 1.x) and the address lookup (getaddrinfo) has no timeout at all: the step runs in a
daemon thread that is abandoned at the deadline. A healthy connection needs well under a second."""

_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
"""What huggingface_hub reads (once, at import, into `huggingface_hub.constants`) to make no network call:
offline mode also stops the agent-registry fetch behind every request's user-agent header."""

_OFFLINE_CONSTANTS = {
    "HF_HUB_OFFLINE": ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"),
    "HF_HUB_DISABLE_TELEMETRY": ("HF_HUB_DISABLE_TELEMETRY", "DISABLE_TELEMETRY", "DO_NOT_TRACK"),
}
"""`huggingface_hub.constants` attribute → the environment variables it is computed from."""

_HUB_LOCK = threading.RLock()
"""Held while memfit switches huggingface_hub's process-wide offline mode on and off, and around its own
online steps, so that one memfit call never sees another one's offline window."""

_T = TypeVar("_T")


def looks_like_repo_id(ref: str) -> bool:
    """True for 'org/name'; paths ('./x', '/x', 'a/b/c', 'x.json') are not repo ids."""
    return bool(_REPO_ID.match(ref)) and not ref.endswith((".json", ".gguf", ".safetensors"))


def hub_offline(offline: bool = False) -> bool:
    """True when `offline` is set or the environment says HF_HUB_OFFLINE=1."""
    return offline or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE_ENV


def load_hub_model(
    repo_id: str, *, revision: str | None = None, offline: bool = False, trust_remote_code: bool = False
) -> ModelSpec:
    """The ModelSpec of a Hub repo, from its config.json and safetensors headers.

    Raises:
        ModelNotFound: no such repo or revision, a gated repo without access, or not cached while offline.
        EngineUnavailable: the Hub could not be reached and the config is not cached.
        ConfigError: the config.json is malformed.
        UnsupportedArchitecture: an unmapped model_type (or one needing --trust-remote-code).
    """
    offline = hub_offline(offline)
    with offline_hub() if offline else contextlib.nullcontext(), _quiet_hub():
        return _load_hub_model(
            repo_id, revision=revision, offline=offline, trust_remote_code=trust_remote_code
        )


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """No network call from huggingface_hub (or transformers through it) while the block runs.

    huggingface_hub reads HF_HUB_OFFLINE and HF_HUB_DISABLE_TELEMETRY from the environment once, when it is
    first imported. Both are set in the environment for an import inside the block (and for child
    processes started in it), and in `huggingface_hub.constants` when it is already imported; both are
    put back afterwards. The switch is process-wide: memfit's own Hub calls wait for each other
    (`_HUB_LOCK`), other threads using huggingface_hub meanwhile are offline for that time too.
    """
    with _HUB_LOCK:
        saved_env = {name: os.environ.get(name) for name in _OFFLINE_ENV}
        constants = sys.modules.get("huggingface_hub.constants")
        saved = {name: getattr(constants, name) for name in _OFFLINE_CONSTANTS} if constants else None
        os.environ.update(_OFFLINE_ENV)
        for name in _OFFLINE_CONSTANTS if constants else ():
            setattr(constants, name, True)
        try:
            yield
        finally:
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            _restore_constants(saved)


def _restore_constants(saved: dict[str, Any] | None) -> None:
    """Put huggingface_hub's offline constants back: as saved, or (first imported under `offline_hub`)
    as the restored environment says."""
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is None:
        return
    for name, variables in _OFFLINE_CONSTANTS.items():
        if saved is not None:
            setattr(constants, name, saved[name])
        else:
            setattr(constants, name, any(_env_true(variable) for variable in variables))


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE_ENV


def hub_timeout_s() -> float:
    """HUB_TIMEOUT_S, or MEMFIT_HUB_TIMEOUT when that is a positive number of seconds."""
    try:
        seconds = float(os.environ.get("MEMFIT_HUB_TIMEOUT", ""))
    except ValueError:
        return HUB_TIMEOUT_S
    return seconds if seconds > 0 else HUB_TIMEOUT_S


class _HubTimeout(Exception):
    """An online Hub step outlived its deadline (the step goes on in an abandoned daemon thread)."""


def _online(step: Callable[[], _T]) -> _T:
    """`step()` in a daemon thread, waited for at most `hub_timeout_s()`; its result or its exception.

    Raises:
        _HubTimeout: no answer in time.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = step()
        except BaseException as err:  # handed to the caller's thread
            outcome["error"] = err

    with _HUB_LOCK:
        worker = threading.Thread(target=target, name="memfit-hub", daemon=True)
        worker.start()
        worker.join(hub_timeout_s())
    if worker.is_alive():
        raise _HubTimeout
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def _load_hub_model(
    repo_id: str, *, revision: str | None, offline: bool, trust_remote_code: bool
) -> ModelSpec:
    config_path = download_config(repo_id, revision=revision, offline=offline)
    # a regular file, the size cap and bounded JSON, as for local files
    config, text = read_config(config_path, origin=f"{repo_id} config.json")
    source = ModelSource(
        kind="hub", ref=repo_id, config_json=text, revision=revision or _snapshot(config_path)
    )
    name = repo_id.rsplit("/", 1)[-1]
    spec = build_spec(config, name=name, source=source, trust_remote_code=trust_remote_code)
    checkpoint = hub_checkpoint(
        repo_id, revision=revision, offline=offline, quant_method=quant_method(config)
    )
    return dataclasses.replace(spec, checkpoint=checkpoint) if checkpoint is not None else spec


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """Hold back huggingface_hub's own warnings (e.g. "Retrying in 4s") while memfit calls it.

    Failures reach the user as one memfit error line; the library's retry chatter on stderr would
    break the CLI's one-line contract. The logger's level is restored afterwards; MEMFIT_DEBUG=1 keeps it.
    """
    if os.environ.get("MEMFIT_DEBUG"):
        yield
        return
    from huggingface_hub.utils import logging as hub_logging  # its import sets the library's level

    logger = hub_logging.get_logger()  # the library root logger, "huggingface_hub"
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _token() -> str | None:
    """HF_TOKEN if set; None lets huggingface_hub use a stored `huggingface-cli login`."""
    return os.environ.get("HF_TOKEN") or None


def _snapshot(config_path: Path) -> str | None:
    """The commit hash of a cached file (…/snapshots/<hash>/config.json), if it came from the cache layout."""
    folder = config_path.parent
    return folder.name if folder.parent.name == "snapshots" else None


def download_config(repo_id: str, *, revision: str | None, offline: bool) -> Path:
    """The local path of `repo_id`'s config.json: cached if possible, downloaded only when allowed.

    Raises:
        ModelNotFound, EngineUnavailable: as `load_hub_model`, one line each saying what to do.
    """
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        with offline_hub():  # a cache lookup needs no network, not even for its user-agent header
            cached = huggingface_hub.hf_hub_download(
                repo_id, "config.json", revision=revision, local_files_only=True
            )
        return Path(cached)
    except LocalEntryNotFoundError as err:
        if offline:
            raise ModelNotFound(
                f"{repo_id} is not in the local Hugging Face cache and offline mode is on; run once without "
                "--offline (and HF_HUB_OFFLINE unset) to cache its config, or give a local path"
            ) from err
    except Exception as err:
        raise _hub_error(repo_id, revision, err) from err
    try:
        return Path(_online(lambda: huggingface_hub.hf_hub_download(
            repo_id, "config.json", revision=revision, token=_token()
        )))
    except _HubTimeout as err:
        raise EngineUnavailable(
            f"the Hugging Face Hub did not answer within {hub_timeout_s():g} s for {repo_id} and its config "
            "is not cached; check the network (or set MEMFIT_HUB_TIMEOUT), or use a catalog name or a local "
            "path"
        ) from err
    except Exception as err:
        raise _hub_error(repo_id, revision, err) from err


def _hub_error(repo_id: str, revision: str | None, err: Exception) -> Exception:
    """The one-line memfit error for a huggingface_hub failure."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    page = f"https://huggingface.co/{repo_id}"
    if isinstance(err, GatedRepoError):
        return ModelNotFound(
            f"{repo_id} is gated: accept its licence at {page}, then run `huggingface-cli login` "
            "or set HF_TOKEN"
        )
    if isinstance(err, RepositoryNotFoundError):
        return ModelNotFound(
            f"no Hub repo {repo_id} (or it is private: log in with `huggingface-cli login` or set HF_TOKEN)"
        )
    if isinstance(err, RevisionNotFoundError):
        return ModelNotFound(f"{repo_id} has no revision {revision!r}; check --revision at {page}")
    if isinstance(err, OfflineModeIsEnabled):
        return ModelNotFound(
            f"{repo_id} is not cached and HF_HUB_OFFLINE is set; unset it to download the config, "
            "or give a local path"
        )
    if isinstance(err, LocalEntryNotFoundError):
        return EngineUnavailable(
            f"could not reach the Hugging Face Hub for {repo_id} and its config is not cached; check the "
            "network, or use a catalog name or a local path (--offline works for cached models)"
        )
    if isinstance(err, EntryNotFoundError):
        return ModelNotFound(f"{repo_id} has no config.json; is it a transformers model? (a GGUF repo: "
                             "download the .gguf file and give its path)")
    if isinstance(err, HFValidationError):
        return ModelNotFound(f"{repo_id!r} is not a valid Hub repo id; write it as org/name")
    return EngineUnavailable(f"Hugging Face Hub request for {repo_id} failed ({type(err).__name__}); "
                             "retry, or use a catalog name or a local path")


def hub_checkpoint(
    repo_id: str, *, revision: str | None, offline: bool, quant_method: str | None
) -> CheckpointInfo | None:
    """The repo's stored tensors from safetensors headers (cache first, then the Hub), or None if unknown."""
    cached = _cached_checkpoint(repo_id, revision=revision, quant_method=quant_method)
    if cached is not None or offline:
        return cached
    import huggingface_hub

    try:
        metadata = _online(lambda: huggingface_hub.HfApi().get_safetensors_metadata(
            repo_id, revision=revision, token=_token()
        ))
    except Exception:
        # best effort: the config alone still gives every shape; the checkpoint only refines weight bytes
        return None
    return checkpoint_from_metadata(metadata, repo_id=repo_id, quant_method=quant_method)


def _cached_checkpoint(
    repo_id: str, *, revision: str | None, quant_method: str | None
) -> CheckpointInfo | None:
    from huggingface_hub import try_to_load_from_cache

    index = try_to_load_from_cache(repo_id, "model.safetensors.index.json", revision=revision)
    if isinstance(index, str):
        folder = Path(index).parent
        if all((folder / shard).is_file() for shard in read_weight_map(Path(index)).values()):
            return load_safetensors_index(Path(index), quant_method=quant_method)
        return None
    single = try_to_load_from_cache(repo_id, "model.safetensors", revision=revision)
    if isinstance(single, str):
        return load_safetensors_checkpoint([Path(single)], quant_method=quant_method)
    return None


def checkpoint_from_metadata(metadata: Any, *, repo_id: str, quant_method: str | None) -> CheckpointInfo:
    """CheckpointInfo from `huggingface_hub`'s SafetensorsRepoMetadata (files in name order)."""
    tensors: list[TensorInfo] = []
    for filename in sorted(metadata.files_metadata):
        file_metadata = metadata.files_metadata[filename]
        header = {
            name: {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": list(info.data_offsets)}
            for name, info in file_metadata.tensors.items()
        }
        tensors.extend(tensors_from_header(header, origin=f"{repo_id} {filename}"))
    return CheckpointInfo(format="safetensors", tensors=tuple(tensors), quant_method=quant_method)
