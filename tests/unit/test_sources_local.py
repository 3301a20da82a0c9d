"""Local config.json, model folders and .safetensors files → ModelSpec; every bad input one typed line."""

import dataclasses
import json
import shutil
import struct
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from memfit.core.errors import ConfigError, MissingExtra, ModelNotFound, UnsupportedArchitecture
from memfit.core.spec import ModelSource, ModelSpec
from memfit.sources.local import load_local

FIXTURES = Path(__file__).parent.parent / "data" / "fixtures"
TINY = FIXTURES / "tiny-llama"
CONFIGS = FIXTURES / "configs"
TINY_BF16_BYTES = 173_696
"""Tiny-Llama in bf16: 86,848 parameters × 2 B.
embed 100·64 = 6,400; per layer q, o 64·64 + k, v 32·64 (4,096·2 + 2,048·2 = 12,288) + gate, up, down
3·64·128 = 24,576 + 2 norms 128 → 36,992; 2 layers 73,984; final norm 64; lm_head 6,400 → 86,848."""


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> Path:
    """Write a valid safetensors file with zeroed data (bf16, f16 or i32 tensors)."""
    element_bytes = {"BF16": 2, "F16": 2, "I32": 4}
    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        nbytes = element_bytes[dtype] * (shape[0] * shape[1] if len(shape) == 2 else shape[0])
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return path


def tiny_tensors() -> dict[str, tuple[str, list[int]]]:
    """Every tensor of Tiny-Llama in bf16 (from the recorded Hub header fixture)."""
    header = json.loads((FIXTURES / "hub" / "tiny-llama-model.safetensors.header.json").read_text())
    del header["__metadata__"]
    return {name: (entry["dtype"], entry["shape"]) for name, entry in header.items()}


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """A copy of the Tiny-Llama folder with its weights in one model.safetensors."""
    folder = tmp_path / "Tiny-Llama"
    shutil.copytree(TINY, folder)
    write_safetensors(folder / "model.safetensors", tiny_tensors())
    return folder


def test_config_json_gives_spec_named_after_folder() -> None:
    """A config.json path maps to a 2-layer, 64-wide llama named after its folder, with no checkpoint."""
    spec = load_local(TINY / "config.json")
    assert (spec.name, spec.family, spec.num_layers, spec.hidden_size) == ("tiny-llama", "llama", 2, 64)
    assert (spec.source.kind, spec.checkpoint) == ("config", None)
    assert json.loads(spec.source.config_json)["vocab_size"] == 100


def test_folder_reads_safetensors_headers(tiny_folder: Path) -> None:
    """A folder with model.safetensors carries every tensor: 173,696 B in bf16."""
    spec = load_local(tiny_folder)
    assert spec.source.kind == "folder"
    assert spec.checkpoint is not None
    assert (len(spec.checkpoint.tensors), spec.checkpoint.total_bytes) == (21, TINY_BF16_BYTES)


def test_sharded_folder_reads_every_shard(tiny_folder: Path) -> None:
    """A folder with an index and two shards gives the same 173,696 B as one file."""
    tensors = tiny_tensors()
    (tiny_folder / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:10], "model-00002-of-00002.safetensors": names[10:]}
    for shard, shard_names in shards.items():
        write_safetensors(tiny_folder / shard, {n: tensors[n] for n in shard_names})
    weight_map = {n: shard for shard, shard_names in shards.items() for n in shard_names}
    (tiny_folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    spec = load_local(tiny_folder)
    assert spec.checkpoint is not None
    assert spec.checkpoint.total_bytes == TINY_BF16_BYTES


def test_safetensors_file_beside_config(tiny_folder: Path) -> None:
    """A .safetensors path reads the config beside it and only that file's tensors."""
    spec = load_local(tiny_folder / "model.safetensors")
    assert (spec.source.kind, spec.name) == ("safetensors", "Tiny-Llama")
    assert spec.checkpoint is not None
    assert spec.checkpoint.total_bytes == TINY_BF16_BYTES


def test_quant_method_recorded_from_config(tiny_folder: Path) -> None:
    """quantization_config.quant_method = 'awq' is recorded on the checkpoint."""
    config = json.loads((tiny_folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 128}
    (tiny_folder / "config.json").write_text(json.dumps(config))
    spec = load_local(tiny_folder)
    assert spec.checkpoint is not None
    assert spec.checkpoint.quant_method == "awq"


def test_missing_path_is_model_not_found(tmp_path: Path) -> None:
    """A path that does not exist is ModelNotFound, one line naming it."""
    with pytest.raises(ModelNotFound, match=r"no such file or folder: .*nope") as info:
        load_local(tmp_path / "nope")
    assert "\n" not in str(info.value)


def test_malformed_json_names_the_line() -> None:
    """A comma missing after line 3 is a ConfigError at line 4 column 3, where the next key starts."""
    with pytest.raises(ConfigError, match=r"malformed.json line 4 column 3: Expecting ',' delimiter") as info:
        load_local(CONFIGS / "malformed.json")
    assert "\n" not in str(info.value)


def test_config_with_required_field_null() -> None:
    """A llama config with num_attention_heads: null (no class default applies) is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"config field 'num_attention_heads' is missing") as info:
        load_local(CONFIGS / "null_heads.json")
    assert "\n" not in str(info.value)


def test_config_with_ill_typed_field(tmp_path: Path) -> None:
    """num_hidden_layers: "two" is a ConfigError saying it must be an integer."""
    config = json.loads((TINY / "config.json").read_text())
    config["num_hidden_layers"] = "two"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"'num_hidden_layers' must be an integer, got 'two'"):
        load_local(path)


def test_config_without_model_type(tmp_path: Path) -> None:
    """A JSON object without model_type is a ConfigError saying so."""
    path = tmp_path / "config.json"
    path.write_text('{"hidden_size": 64}')
    with pytest.raises(ConfigError, match=r"no model_type"):
        load_local(path)


def test_unknown_model_type_without_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unmapped model_type with the meta-device builder unimportable is UnsupportedArchitecture."""
    monkeypatch.setitem(sys.modules, "memfit.trace.meta", None)  # makes `import memfit.trace.meta` fail
    match = r"'frobnicator' is not supported; supported: .*llama"
    with pytest.raises(UnsupportedArchitecture, match=match) as info:
        load_local(CONFIGS / "unknown_type.json")
    assert "\n" not in str(info.value)


def test_remote_code_needs_the_flag() -> None:
    """A config with auto_map and an unmapped model_type asks for --trust-remote-code."""
    with pytest.raises(UnsupportedArchitecture, match=r"pass --trust-remote-code"):
        load_local(CONFIGS / "remote_code.json")


def test_folder_without_config_is_config_error(tmp_path: Path) -> None:
    """A folder with neither config.json nor a single .gguf is a ConfigError."""
    with pytest.raises(ConfigError, match=r"no config.json in this folder"):
        load_local(tmp_path)


def test_safetensors_without_config_is_config_error(tmp_path: Path) -> None:
    """A lone .safetensors file without a config beside it is a ConfigError."""
    path = write_safetensors(tmp_path / "model.safetensors", {"w": ("BF16", [2, 2])})
    with pytest.raises(ConfigError, match=r"no config.json beside it"):
        load_local(path)


def test_unknown_model_type_goes_to_meta_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    """With transformers, an unmapped model_type is built by memfit.trace.meta.spec_on_meta, flags passed."""
    calls = []

    def spec_on_meta(
        config: dict[str, Any], *, name: str, source: ModelSource, trust_remote_code: bool
    ) -> tuple[ModelSpec, tuple[str, ...]]:
        calls.append((config["model_type"], name, source.kind, trust_remote_code))
        stand_in = load_local(TINY / "config.json")
        return dataclasses.replace(stand_in, family=config["model_type"]), ("built on the meta device",)

    monkeypatch.setitem(sys.modules, "memfit.trace.meta", types.SimpleNamespace(spec_on_meta=spec_on_meta))
    spec = load_local(CONFIGS / "remote_code.json", trust_remote_code=True)
    assert calls == [("frobnicator", "remote_code", "config", True)]
    assert (spec.family, spec.assumptions) == ("frobnicator", ("built on the meta device",))


def test_meta_builder_without_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A meta builder that finds no transformers (MissingExtra) still gives UnsupportedArchitecture."""

    def spec_on_meta(
        config: dict[str, Any], *, name: str, source: ModelSource, trust_remote_code: bool
    ) -> tuple[ModelSpec, tuple[str, ...]]:
        raise MissingExtra("needs torch: pip install 'memfit[trace]'")

    monkeypatch.setitem(sys.modules, "memfit.trace.meta", types.SimpleNamespace(spec_on_meta=spec_on_meta))
    with pytest.raises(UnsupportedArchitecture, match=r"pip install 'memfit\[trace\]' to count it"):
        load_local(CONFIGS / "unknown_type.json")


def test_a_quant_the_loader_applies_follows_the_shapes_not_the_stored_tensors(tiny_folder: Path) -> None:
    """A bf16 folder loaded with bitsandbytes nf4 is counted as nf4 (the safetensors list holds bf16
    tensors the loader converts), the same as the config alone; unquantized it is the stored 173,696 B."""
    from memfit.core.estimate import estimate
    from memfit.core.workload import Inference

    folder = load_local(tiny_folder)
    config = load_local(TINY / "config.json")

    def weights(spec: ModelSpec, quant: str) -> int:
        est = estimate(spec, Inference(prompt_tokens=16, quant=quant))
        return est.phase("load").memory.bytes_of("weights")

    assert weights(folder, "none") == TINY_BF16_BYTES
    assert weights(folder, "nf4") == weights(config, "nf4") < TINY_BF16_BYTES // 2
