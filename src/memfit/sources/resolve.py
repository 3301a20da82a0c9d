"""A model reference → ModelSpec, in DESIGN §6 order; the first match wins.

1. the bundled catalog: a repo basename (`Llama-3.1-8B`) or repo id, any case, or a listed post-training
   variant of one (`Llama-3.1-8B-Instruct`, `meta-llama/Llama-2-70b-chat-hf`: `memfit.sources.variants`),
   which says in its assumptions which catalog config it resolved to and why; offline, no login;
2. an existing local path: config.json, model folder, .safetensors beside its config, .gguf;
3. a Hugging Face Hub id (`org/name`): config and safetensors headers, cache first;
4. a well-known model that is not a causal LM (`bert-base-uncased`, `t5-base`): `UnsupportedArchitecture`,
   one line saying what it is and what memfit covers;
5. otherwise `ModelNotFound`, naming the closest catalog models.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from memfit.core.errors import ModelNotFound, UnsupportedArchitecture
from memfit.core.limits import shown
from memfit.core.spec import ModelSpec
from memfit.sources._config import LOCAL_HINT
from memfit.sources.catalog import (
    catalog_model_entry,
    close_model_names,
    load_catalog_model,
    not_causal_model_line,
)
from memfit.sources.hub import load_hub_model, looks_like_repo_id
from memfit.sources.local import load_local

MAX_REF_CHARS = 4_096
"""Longest model reference: a catalog name, Hub id (at most 96 characters on the Hub) or local path (Linux
PATH_MAX is 4,096 bytes). A longer one is refused before any lookup or fuzzy match is sized by it."""


def load_model(
    ref: str, *, revision: str | None = None, offline: bool = False, trust_remote_code: bool = False,
    local_paths: bool = True,
) -> ModelSpec:
    """The ModelSpec for a catalog name, a local path or a Hugging Face Hub id.

    Args:
        ref: `Llama-3.1-8B`, `meta-llama/Llama-3.1-8B`, `./my-model/`, `model.gguf` or `org/name`.
        revision: a Hub branch, tag or commit; a catalog model pinned to another revision is then
            fetched from the Hub instead.
        offline: never touch the network (as does `HF_HUB_OFFLINE=1`); Hub ids must be cached.
        trust_remote_code: allow counting a repo that ships its own model code (auto_map), with
            transformers on the meta device; never needed for the catalog.
        local_paths: False skips step 2 (`memfit serve` refuses local files): only catalog names and
            Hub ids resolve.

    Returns:
        The model's shapes, with `source` (kind, ref, config text, revision) and, for checkpoints read
        from safetensors or GGUF, `checkpoint` (every stored tensor's dtype and exact bytes).

    Raises:
        ModelNotFound: nothing by that name or path, a Hub 404, a gated repo, or an uncached id offline.
        ConfigError: a malformed config.json, safetensors header or GGUF file.
        UnsupportedArchitecture: a model that is not a causal LM (encoder-only, encoder-decoder, an
            encoder), or a model_type with no family module and no [trace] extra.
        MissingExtra: a .gguf file without the [gguf] extra.
        EngineUnavailable: the Hub could not be reached for an uncached id.
    """
    text = ref.strip()
    if not text:
        raise ModelNotFound("empty model name; give a catalog name, a local path or a Hub id like org/name")
    if len(text) > MAX_REF_CHARS:
        raise ModelNotFound(f"a model reference of {len(text):,} characters is too long "
                            f"(limit {MAX_REF_CHARS:,}); give a catalog name, a local path or a Hub id")
    entry = catalog_model_entry(text)
    if entry is not None:
        if revision is None or revision == entry.get("revision"):
            spec = load_catalog_model(text)
            if spec is not None:
                return spec
        # pinned to another revision than the catalog's: the Hub has it
        return load_hub_model(str(entry["repo_id"]), revision=revision, offline=offline,
                              trust_remote_code=trust_remote_code)
    path = Path(text).expanduser()
    if local_paths and _exists(path):
        return load_local(path, trust_remote_code=trust_remote_code)
    refusal = not_causal_model_line(text)
    if refusal is not None:  # known without its config: no Hub round trip for a fixed answer
        raise UnsupportedArchitecture(refusal)
    if looks_like_repo_id(text):
        return load_hub_model(text, revision=revision, offline=offline, trust_remote_code=trust_remote_code)
    if not local_paths and _looks_like_path(text):
        raise ModelNotFound(f"local paths are not accepted here ({text}); use a catalog name or a Hub id")
    raise ModelNotFound(_not_found_message(text))


def _exists(path: Path) -> bool:
    """True when something is at `path`; False for a name no file can have (too long, a NUL byte).

    Raises:
        ModelNotFound: the path cannot be examined (a permission denied on a folder, a symlink loop).
    """
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return False
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG:
            return False
        reason = err.strerror or str(err)
        raise ModelNotFound(f"{shown(str(path))}: cannot examine it ({reason}); {LOCAL_HINT}") from err
    return True


def _not_found_message(ref: str) -> str:
    if _looks_like_path(ref):
        return f"no such file or folder: {ref}; give a config.json, a model folder or a .gguf file"
    close = close_model_names(ref)
    hint = f"closest catalog models: {', '.join(close)}" if close else "see `memfit catalog models`"
    return f"no model named {ref!r}; {hint}; or give a local path or a Hub id like org/name"


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or "\\" in ref or ref.count("/") > 1 or ref.endswith(
        (".json", ".gguf", ".safetensors")
    )
