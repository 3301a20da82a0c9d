"""The bundled catalog (package data in `memfit.catalog`) → ModelSpec and Gpu, offline and without login.

`models.json` (schema `memfit.catalog/1`) lists each model's name (the repo basename), repo id, revision and
gated flag; `models/<name>.json` holds its config.json as published. An entry's "variants" are its
post-training releases (`-Instruct`, `-chat`, `-it`, `-Base`, ...; the rule is in `memfit.sources.variants`):
each resolves, by name or repo id, to the entry's config with the keys its own config.json publishes
differently ("differs") applied, and says so in the spec's assumptions. "not_causal_lm" lists well-known
models memfit does not estimate (encoder-only, encoder-decoder, vision or audio encoders), so that their
names get the one line saying why. `gpus.json` (schema `memfit.gpus/1`) lists GPUs with aliases,
architecture, compute capability, board memory and the memory CUDA offers one process; capabilities (bf16,
fp8, fp4, FlashAttention, BLAS workspace) come from the architecture's row in `core/devices.py`. Both are
read with
`importlib.resources` and cached; names match case-insensitively. A GPU may also be an anonymous size
("24GiB", "80GB").
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.resources
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memfit.core.devices import ARCHS, DEFAULT_ARCH
from memfit.core.errors import ConfigError, InvalidWorkload, UnknownGpu
from memfit.core.result import Gpu
from memfit.core.spec import ModelSource, ModelSpec
from memfit.core.units import UNITS, parse_size
from memfit.sources._config import build_spec, parse_config
from memfit.sources.not_causal import not_causal_line
from memfit.sources.variants import DIFFERS_KEYS, resolution_note, variant_kind

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


@dataclass(frozen=True, slots=True)
class _Listed:
    """A name the catalog answers for: a catalog entry, or one of its listed post-training variants."""

    entry: dict[str, Any]
    variant: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return str(self.entry["name"]) if self.variant is None else _basename(self.variant)


def _basename(variant: dict[str, Any]) -> str:
    return str(variant["repo_id"]).rsplit("/", 1)[-1]


def _variants(entry: dict[str, Any]) -> list[dict[str, Any]]:
    variants = entry.get("variants", [])
    if not isinstance(variants, list) or not all(
        isinstance(v, dict) and isinstance(v.get("repo_id"), str) and isinstance(v.get("differs", {}), dict)
        for v in variants
    ):
        raise ConfigError(f"catalog models.json: {entry.get('name')!r} variants must be objects with a "
                          "repo_id and an optional differs object")
    return variants


@functools.cache
def _model_index() -> dict[str, _Listed]:
    """Lower-cased name and repo id → catalog entry, then each listed variant's (an entry's own name wins)."""
    index: dict[str, _Listed] = {}
    for entry in _model_entries():
        for key in (entry.get("name"), entry.get("repo_id")):
            if isinstance(key, str):
                index[key.lower()] = _Listed(entry=entry)
    for entry in _model_entries():
        for variant in _variants(entry):
            listed = _Listed(entry=entry, variant=variant)
            for key in (listed.name, variant["repo_id"]):
                index.setdefault(key.lower(), listed)
    return index


def catalog_models() -> list[dict[str, Any]]:
    """Every catalog model entry as published in models.json (copies: callers may not change the catalog),
    each with "aliases": the names and repo ids of its listed variants."""
    return [
        {**entry, "aliases": [alias for v in _variants(entry) for alias in (_basename(v), v["repo_id"])]}
        for entry in _model_entries()
    ]


def catalog_model_entry(name: str) -> dict[str, Any] | None:
    """The catalog entry for a repo basename or repo id (any case), or None. A listed variant gives its own
    name, repo id and revision, with "variant_of" naming its catalog entry."""
    listed = _model_index().get(name.strip().lower())
    if listed is None:
        return None
    if listed.variant is None:
        return dict(listed.entry)
    return {
        "name": listed.name, "repo_id": listed.variant["repo_id"],
        "revision": listed.variant.get("revision", "main"), "gated": listed.variant.get("gated"),
        "model_type": listed.entry.get("model_type"), "variant_of": listed.entry["name"],
    }


def close_model_names(name: str, *, limit: int = 3) -> list[str]:
    """Catalog model and variant names closest to `name` (difflib ratio ≥ 0.6, best first)."""
    names = {listed.name.lower(): listed.name for listed in _model_index().values()}
    basename = name.strip().rsplit("/", 1)[-1].lower()
    return [names[n] for n in difflib.get_close_matches(basename, list(names), n=limit)]


def load_catalog_model(name: str) -> ModelSpec | None:
    """The catalog model named `name` (repo basename or repo id of an entry or of a listed variant, any
    case), or None if it is not listed.

    Raises:
        ConfigError: the bundled config is malformed (a packaging bug).
    """
    listed = _model_index().get(name.strip().lower())
    return _load_entry(listed.name) if listed is not None else None


@functools.cache
def _load_entry(name: str) -> ModelSpec:
    listed = _model_index()[name.lower()]
    entry = listed.entry
    base = str(entry["name"])
    resource = _catalog_files().joinpath("models", f"{base}.json")
    if not resource.is_file():
        raise ConfigError(f"catalog model {base} has no models/{base}.json; the memfit install is incomplete")
    text = resource.read_text(encoding="utf-8")
    config = parse_config(text, origin=f"catalog models/{base}.json")
    if listed.variant is None:
        revision = entry.get("revision")
        source = ModelSource(
            kind="catalog", ref=str(entry.get("repo_id", base)), config_json=text,
            revision=str(revision) if revision is not None else None,
        )
        return build_spec(config, name=base, source=source)
    return _load_variant(listed.variant, base=base, config=config)


def _load_variant(variant: dict[str, Any], *, base: str, config: dict[str, Any]) -> ModelSpec:
    """A listed variant: its base's config with the keys it publishes differently, and the note saying so."""
    name = _basename(variant)
    kind = variant_kind(base, name)
    differs: dict[str, Any] = variant.get("differs", {})
    if kind is None:
        raise ConfigError(f"catalog models.json: {name} is not a post-training variant of {base} by name; "
                          "list it as a model of its own")
    shape_keys = sorted(set(differs) - DIFFERS_KEYS)
    if shape_keys:
        raise ConfigError(f"catalog models.json: variant {name} of {base} differs in "
                          f"{', '.join(shape_keys)}, which may set a shape; list it as a model of its own")
    merged = {**config, **differs}
    text = json.dumps(merged, indent=2)
    source = ModelSource(kind="catalog", ref=str(variant["repo_id"]), config_json=text,
                         revision=str(variant.get("revision", "main")))
    spec = build_spec(merged, name=name, source=source)
    note = resolution_note(name, base, kind=kind, differs=differs)
    return dataclasses.replace(spec, assumptions=(note, *spec.assumptions))


def not_causal_model_line(name: str) -> str | None:
    """The one line refusing a well-known model that is not a causal LM (bert-base-uncased, t5-base, ...)
    listed in models.json "not_causal_lm", by name or repo id in any case; None for other names."""
    key = name.strip().lower()
    for listed in _not_causal_entries():
        if key in (str(listed.get("name", "")).lower(), str(listed.get("repo_id", "")).lower()):
            return not_causal_line({"model_type": listed.get("model_type"),
                                    "architectures": listed.get("architectures", [])}, name=name.strip())
    return None


def _not_causal_entries() -> tuple[dict[str, Any], ...]:
    """models.json's "not_causal_lm" list, read afresh (about a millisecond): only names the catalog does not
    list get here, on their way to the Hub or to a not-found line."""
    resource = _catalog_files().joinpath("models.json")
    if not resource.is_file():
        return ()
    listed = parse_config(resource.read_text(encoding="utf-8"), origin="catalog models.json").get(
        "not_causal_lm", [])
    return tuple(item for item in listed if isinstance(item, dict)) if isinstance(listed, list) else ()


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
