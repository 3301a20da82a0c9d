"""The bundled catalog (package data in `memfit.catalog`) → ModelSpec and Gpu, offline and without login.

`models.json` (schema `memfit.catalog/1`) lists each model's name (the repo basename), repo id, revision and
gated flag; `models/<name>.json` holds its config.json as published. `gpus.json` (schema `memfit.gpus/1`)
lists GPUs with aliases, architecture, compute capability, board memory and the memory CUDA offers one
process; capabilities (bf16, fp8, fp4, FlashAttention, BLAS workspace) come from the architecture's row in
`core/devices.py`. Both are read with
`importlib.resources` and cached; names match case-insensitively. A GPU may also be an anonymous size
("24GiB", "80GB").
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import re
from typing import TYPE_CHECKING, Any

from memfit.core.devices import ARCHS, DEFAULT_ARCH
from memfit.core.errors import ConfigError, InvalidWorkload, UnknownGpu
from memfit.core.result import Gpu
from memfit.core.spec import ModelSource, ModelSpec
from memfit.core.units import UNITS, parse_size
from memfit.sources._config import build_spec, parse_config

if TYPE_CHECKING:  # importlib.resources.abc is new in Python 3.11; requires-python is 3.10
    from importlib.resources.abc import Traversable

CATALOG_PACKAGE = "memfit.catalog"
MODELS_SCHEMA = "memfit.catalog/1"
GPUS_SCHEMA = "memfit.gpus/1"

_SIZE_WITH_UNIT = re.compile(r"^\s*(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[KMGT]i?B)\s*$", re.IGNORECASE)
"""An anonymous GPU must name a unit: a bare "24" is more likely a typo than a 24-byte GPU."""


def _catalog_files() -> Traversable:
    """The catalog's package data folder (tests point this at a fixture folder)."""
    return importlib.resources.files(CATALOG_PACKAGE)


def _read_document(filename: str, *, schema: str, key: str) -> list[dict[str, Any]]:
    resource = _catalog_files().joinpath(filename)
    if not resource.is_file():
        raise ConfigError(f"catalog {filename} is missing; the install is incomplete: reinstall memfit")
    document = parse_config(resource.read_text(encoding="utf-8"), origin=f"catalog {filename}")
    if document.get("schema") != schema:
        found = document.get("schema")
        raise ConfigError(f"catalog {filename} has schema {found!r}; this memfit reads {schema}")
    entries = document.get(key)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"catalog {filename}: {key!r} must be a list of objects")
    return entries


@functools.cache
def _model_entries() -> tuple[dict[str, Any], ...]:
    return tuple(_read_document("models.json", schema=MODELS_SCHEMA, key="models"))


@functools.cache
def _model_index() -> dict[str, dict[str, Any]]:
    """Lower-cased name and repo id → catalog entry."""
    index: dict[str, dict[str, Any]] = {}
    for entry in _model_entries():
        for key in (entry.get("name"), entry.get("repo_id")):
            if isinstance(key, str):
                index[key.lower()] = entry
    return index


def catalog_models() -> list[dict[str, Any]]:
    """Every catalog model entry as published in models.json (copies: callers may not change the catalog)."""
    return [dict(entry) for entry in _model_entries()]


def catalog_model_entry(name: str) -> dict[str, Any] | None:
    """The catalog entry for a repo basename or repo id (any case), or None."""
    entry = _model_index().get(name.strip().lower())
    return dict(entry) if entry is not None else None


def close_model_names(name: str, *, limit: int = 3) -> list[str]:
    """Catalog model names closest to `name` (difflib ratio ≥ 0.6, best first)."""
    names = {str(entry["name"]).lower(): str(entry["name"]) for entry in _model_entries()}
    basename = name.strip().rsplit("/", 1)[-1].lower()
    return [names[n] for n in difflib.get_close_matches(basename, list(names), n=limit)]


def load_catalog_model(name: str) -> ModelSpec | None:
    """The catalog model named `name` (repo basename or repo id, any case), or None if it is not listed.

    Raises:
        ConfigError: the bundled config is malformed (a packaging bug).
    """
    entry = _model_index().get(name.strip().lower())
    return _load_entry(str(entry["name"])) if entry is not None else None


@functools.cache
def _load_entry(name: str) -> ModelSpec:
    entry = _model_index()[name.lower()]
    resource = _catalog_files().joinpath("models", f"{name}.json")
    if not resource.is_file():
        raise ConfigError(f"catalog model {name} has no models/{name}.json; the memfit install is incomplete")
    text = resource.read_text(encoding="utf-8")
    config = parse_config(text, origin=f"catalog models/{name}.json")
    revision = entry.get("revision")
    source = ModelSource(
        kind="catalog", ref=str(entry.get("repo_id", name)), config_json=text,
        revision=str(revision) if revision is not None else None,
    )
    return build_spec(config, name=name, source=source)


def _gpu_from_entry(entry: dict[str, Any]) -> Gpu:
    """A catalog GPU; its capability fields come from its architecture's row (core/devices.py ARCHS)."""
    arch = str(entry.get("arch", ""))
    if arch not in ARCHS:
        raise ConfigError(f"catalog gpus.json: entry {entry.get('name')!r} has arch {arch!r}; "
                          f"known: {', '.join(ARCHS)}")
    row = ARCHS[arch]
    try:
        return Gpu(
            name=str(entry["name"]), memory_bytes=int(entry["memory_bytes"]),
            usable_bytes=int(entry["usable_bytes"]), source=str(entry.get("source", "")),
            vendor=str(entry.get("vendor", "nvidia")),
            aliases=tuple(str(alias) for alias in entry.get("aliases", ())),
            arch=arch, compute_capability=str(entry["compute_capability"]), bf16=row.bf16, fp8=row.fp8,
            fp4=row.fp4, flash_attention=row.flash_attention, blas_workspace_bytes=row.blas_workspace_bytes,
            unified_memory=row.unified_memory,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"catalog gpus.json: entry {entry.get('name')!r} is malformed ({err})") from err


@functools.cache
def _gpus() -> tuple[Gpu, ...]:
    return tuple(_gpu_from_entry(e) for e in _read_document("gpus.json", schema=GPUS_SCHEMA, key="gpus"))


def _gpu_key(name: str) -> str:
    """'H100 SXM 80GB', 'h100-sxm-80gb' and 'H100_SXM_80GB' are one key."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


@functools.cache
def _gpu_index() -> dict[str, Gpu]:
    index: dict[str, Gpu] = {}
    for gpu in _gpus():
        for key in (gpu.name, *gpu.aliases):
            index.setdefault(_gpu_key(key), gpu)
    return index


def catalog_gpus() -> list[Gpu]:
    """Every GPU of the catalog, in catalog order."""
    return list(_gpus())


def get_gpu(name: str) -> Gpu:
    """A catalog GPU by name or alias (any case, spaces, '-' or '_'), or an anonymous size like '24GiB'.

    Raises:
        UnknownGpu: neither a catalog name nor a size with a unit; the message names the closest GPUs.
    """
    gpu = _gpu_index().get(_gpu_key(name))
    if gpu is not None:
        return gpu
    size = _SIZE_WITH_UNIT.match(name)
    if size is not None:
        return _anonymous_gpu(name, label=size["number"] + _unit_symbol(size["unit"]))
    by_lower = {key.lower(): gpu.name for gpu in _gpus() for key in (gpu.name, *gpu.aliases)}
    matches = difflib.get_close_matches(name.strip().lower(), list(by_lower), n=6, cutoff=0.5)
    close = list(dict.fromkeys(by_lower[match] for match in matches))[:3]
    hint = f"closest: {', '.join(close)}" if close else "see `memfit catalog gpus`"
    raise UnknownGpu(f"no GPU named {name!r}; {hint}; or give a memory size such as 24GiB")


def _unit_symbol(unit: str) -> str:
    """The canonical spelling of a unit typed in any case: 'gib' → 'GiB', 'gb' → 'GB'."""
    return next(symbol for symbol in UNITS if symbol.lower() == unit.lower())


def _anonymous_gpu(text: str, *, label: str) -> Gpu:
    try:
        num_bytes = parse_size(text)
    except InvalidWorkload as err:
        raise UnknownGpu(f"GPU size {text!r} is not a size; write e.g. 24GiB or 80GB") from err
    if num_bytes < 1:
        raise UnknownGpu(f"GPU size {text!r} must be more than 0 bytes; write e.g. 24GiB or 80GB")
    return Gpu(name=label, memory_bytes=num_bytes, usable_bytes=num_bytes,
               source="a size given by the user: all of it is taken as usable; its architecture is "
                      f"assumed to be {DEFAULT_ARCH} (an H100's capabilities and overheads)")
