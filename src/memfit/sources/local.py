"""Local files → ModelSpec: a config.json, a model folder, a .safetensors beside its config, a .gguf file.

A folder's checkpoint is read from safetensors headers only (`model.safetensors.index.json` and its shards,
else `model.safetensors`, else every `*.safetensors`), so its tensors are counted as stored. A folder with
no config.json but exactly one .gguf file is that GGUF. Only regular files are read (symlinks followed):
a FIFO, a device or a socket under a model file's name is refused without being opened.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from memfit.core.errors import ConfigError, ModelNotFound
from memfit.core.spec import CheckpointInfo, ModelSource, ModelSpec
from memfit.sources._config import LOCAL_HINT, build_spec, quant_method, read_config, regular_file_size
from memfit.sources.safetensors import load_safetensors_checkpoint, load_safetensors_index, read_weight_map

CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"
SINGLE_FILE_NAME = "model.safetensors"


def load_local(path: Path | str, *, trust_remote_code: bool = False) -> ModelSpec:
    """The ModelSpec of a local config.json, model folder, .safetensors file or .gguf file.

    Raises:
        ModelNotFound: nothing exists at `path`.
        ConfigError: the config or a checkpoint header is malformed, or the path holds no model.
        UnsupportedArchitecture: the config's model_type has no mapping (and no [trace] extra).
        MissingExtra: a .gguf file without the [gguf] extra.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelNotFound(f"no such file or folder: {path}; {LOCAL_HINT}")
    if path.is_dir():
        return _load_folder(path, trust_remote_code=trust_remote_code)
    if path.suffix == ".gguf":
        from memfit.sources.gguf import load_gguf

        return load_gguf(path)
    if path.suffix == ".safetensors":
        return _load_safetensors_file(path, trust_remote_code=trust_remote_code)
    if path.name == INDEX_NAME:
        return _load_folder(path.parent, trust_remote_code=trust_remote_code)
    if path.suffix == ".json":
        return _load_config_file(path, trust_remote_code=trust_remote_code)
    raise ConfigError(f"{path}: not a config.json, .safetensors or .gguf file; {LOCAL_HINT}")


def _model_name(config_path: Path) -> str:
    """The folder's name for `<folder>/config.json`, else the file's stem."""
    folder = config_path.resolve().parent
    return folder.name if config_path.name == CONFIG_NAME and folder.name else config_path.stem


def _is_there(path: Path) -> bool:
    """True when `path` is a regular file, False when nothing is there.

    Raises:
        ConfigError: something other than a regular file is there (a FIFO, a device, a socket, a folder).
    """
    return regular_file_size(path) is not None


def _load_config_file(path: Path, *, trust_remote_code: bool) -> ModelSpec:
    config, text = read_config(path)
    source = ModelSource(kind="config", ref=str(path), config_json=text)
    return build_spec(config, name=_model_name(path), source=source, trust_remote_code=trust_remote_code,
                      origin=str(path))


def _load_folder(folder: Path, *, trust_remote_code: bool) -> ModelSpec:
    config_path = folder / CONFIG_NAME
    if not _is_there(config_path):
        ggufs = sorted(folder.glob("*.gguf"))
        if len(ggufs) == 1:
            from memfit.sources.gguf import load_gguf

            return load_gguf(ggufs[0])
        raise ConfigError(f"{folder}: no {CONFIG_NAME} in this folder; {LOCAL_HINT}")
    config, text = read_config(config_path)
    source = ModelSource(kind="folder", ref=str(folder), config_json=text)
    name = _model_name(config_path)
    spec = build_spec(config, name=name, source=source, trust_remote_code=trust_remote_code,
                      origin=str(config_path))
    checkpoint = _folder_checkpoint(folder, quant_method=quant_method(config))
    return dataclasses.replace(spec, checkpoint=checkpoint) if checkpoint is not None else spec


def _folder_checkpoint(folder: Path, *, quant_method: str | None) -> CheckpointInfo | None:
    if _is_there(folder / INDEX_NAME):
        return load_safetensors_index(folder / INDEX_NAME, quant_method=quant_method)
    if _is_there(folder / SINGLE_FILE_NAME):
        return load_safetensors_checkpoint([folder / SINGLE_FILE_NAME], quant_method=quant_method)
    files = sorted(folder.glob("*.safetensors"))
    return load_safetensors_checkpoint(files, quant_method=quant_method) if files else None


def _load_safetensors_file(path: Path, *, trust_remote_code: bool) -> ModelSpec:
    config_path = path.parent / CONFIG_NAME
    if not _is_there(config_path):
        raise ConfigError(
            f"{path}: no {CONFIG_NAME} beside it; memfit needs the model config to know the architecture"
        )
    config, text = read_config(config_path)
    source = ModelSource(kind="safetensors", ref=str(path), config_json=text)
    name = _model_name(config_path)
    spec = build_spec(config, name=name, source=source, trust_remote_code=trust_remote_code,
                      origin=str(config_path))
    index_path = path.parent / INDEX_NAME
    if _is_there(index_path) and path.name in read_weight_map(index_path).values():
        # one shard of a sharded checkpoint stands for the whole checkpoint
        checkpoint = load_safetensors_index(index_path, quant_method=quant_method(config))
    else:
        checkpoint = load_safetensors_checkpoint([path], quant_method=quant_method(config))
    return dataclasses.replace(spec, checkpoint=checkpoint)
