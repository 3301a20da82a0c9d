"""Hostile model files: each is one ConfigError line naming the file and the field, found before any work.

Every file is made in tmp_path: configs with absurd dimensions, a GGUF whose array claims 10^7 items,
config.json symlinked to /dev/zero, FIFOs and sockets under model-file names, a 98 MB safetensors header (a
sparse file), JSON nested 10^5 deep, NaN, Infinity and 5,000-digit numbers. Cost targets (2 s, 200 MiB per
case through the CLI) are measured by benchmarks/hostile.py, not asserted here.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import re
import signal
import socket
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.helpers import requires_gguf
from tests.strategies import FUZZ_EXAMPLES
from typer.testing import CliRunner

from memfit.api import load_model
from memfit.cli import run
from memfit.core.errors import ConfigError, MemfitError, ModelNotFound
from memfit.core.families import FAMILIES
from memfit.core.limits import (
    FIELD_BOUNDS,
    MAX_CONTEXT_TOKENS,
    MAX_HIDDEN_SIZE,
    MAX_NUM_HEADS,
    MAX_NUM_LAYERS,
    MAX_VOCAB_SIZE,
)
from memfit.core.spec import ModelSource, ModelSpec
from memfit.sources import safetensors
from memfit.sources._config import MAX_JSON_DEPTH, build_spec, parse_config

TINY_CONFIG = Path(__file__).parent.parent / "data" / "fixtures" / "tiny-llama" / "config.json"
FAMILIES_SOURCE = Path(__file__).parents[2] / "src" / "memfit" / "core" / "families"
BLOCKING_GUARD_S = 10
"""A test that opened a FIFO would wait forever; the alarm turns that into a failure after 10 s."""


def tiny_config(**fields: Any) -> dict[str, Any]:
    """Tiny-Llama's config.json (64 wide, 2 layers, 4 heads, 2 KV heads, head_dim 16) with `fields` set."""
    return {**json.loads(TINY_CONFIG.read_text()), **fields}


def write_config(folder: Path, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "config.json"
    path.write_text(text)
    return path


@contextlib.contextmanager
def never_blocks() -> Iterator[None]:
    """Fail (rather than hang) if the code under test waits on a FIFO."""

    def give_up(signum: int, frame: object) -> None:
        raise TimeoutError("blocked on a FIFO or device")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(BLOCKING_GUARD_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def assert_config_error(path: Path | str, pattern: str) -> ConfigError:
    """load_model(path) raises one ConfigError line matching `pattern` (exit code 2)."""
    with never_blocks(), pytest.raises(ConfigError, match=pattern) as info:
        load_model(str(path))
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2
    return info.value


# --- absurd dimensions ---------------------------------------------------------------------------------


def test_a_billion_layers_is_refused_before_any_layer_is_built(tmp_path: Path) -> None:
    """num_hidden_layers: 10**9 (1 KB of JSON; 7.9 GB before) is refused, naming the file and the limit."""
    path = write_config(tmp_path / "m", json.dumps(tiny_config(num_hidden_layers=10**9)))
    assert_config_error(path, re.escape(
        f"{path}: config field 'num_hidden_layers'=1000000000 is out of range 1..4,096 (MAX_NUM_LAYERS)"))


@pytest.mark.parametrize(("fields", "message"), [
    ({"hidden_size": 1e30}, "config field 'hidden_size' must be an integer, got 1e+30"),
    ({"hidden_size": 64.0}, "config field 'hidden_size' must be an integer, got 64.0"),
    ({"intermediate_size": 128.5}, "config field 'intermediate_size' must be an integer, got 128.5"),
    ({"vocab_size": True}, "config field 'vocab_size' must be an integer, got True"),
    ({"num_key_value_heads": 0}, "config field 'num_key_value_heads'=0 is out of range 1..8,192"),
    ({"hidden_size": -64}, "config field 'hidden_size'=-64 is out of range 1..131,072 (MAX_HIDDEN_SIZE)"),
    ({"head_dim": 0}, "config field 'head_dim'=0 is out of range 1..8,192 (MAX_HEAD_DIM)"),
    ({"vocab_size": 2**40}, "config field 'vocab_size'=1099511627776 is out of range 1..16,777,216"),
    ({"max_position_embeddings": 2**31}, "'max_position_embeddings'=2147483648 is out of range"),
    ({"num_attention_heads": 10**40}, "'num_attention_heads'=about 10^40 is out of range"),
    ({"num_key_value_heads": 3}, "num_key_value_heads=3 does not divide num_attention_heads=4"),
    ({"num_attention_heads": 3, "num_key_value_heads": 3, "head_dim": None},
     "hidden_size=64 is not divisible by num_attention_heads=3"),
    ({"text_config": {"num_hidden_layers": 10**9}},
     "config field 'text_config.num_hidden_layers'=1000000000 is out of range"),
], ids=["float-1e30", "float-64.0", "fraction", "bool", "zero-kv-heads", "negative", "zero-head-dim",
        "vocab-2^40", "context-2^31", "heads-10^40", "kv-not-dividing", "heads-not-dividing",
        "nested-text-config"])
def test_meaningless_dimensions_are_refused(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    """Each non-integer, non-positive, out-of-reason or non-dividing dimension is one line naming it."""
    path = write_config(tmp_path / "m", json.dumps(tiny_config(**fields)))
    assert_config_error(path, f"^{re.escape(str(path))}: .*{re.escape(message)}")


def test_unmapped_model_type_is_checked_before_the_meta_build(tmp_path: Path) -> None:
    """An unmapped model_type with 10**9 layers is refused before transformers could build it on meta."""
    path = write_config(tmp_path / "m", json.dumps(tiny_config(model_type="frobnicator",
                                                               num_hidden_layers=10**9)))
    assert_config_error(path, "'num_hidden_layers'=1000000000 is out of range")


def test_every_integer_field_a_family_reads_has_a_bound() -> None:
    """Every key the family modules read with req_int/opt_int has its own Bound in limits.FIELD_BOUNDS."""
    source = "\n".join(path.read_text() for path in FAMILIES_SOURCE.glob("*.py"))
    calls = re.findall(r"(?:req_int|opt_int)\(([^)]*)\)", source)
    keys = {key for call in calls for key in re.findall(r"\"(\w+)\"", call)}
    keys |= set(re.findall(r"key=\"(\w+)\"", source))  # dense_mlp(config, key="ffn_dim")
    assert "num_hidden_layers" in keys
    assert sorted(keys - set(FIELD_BOUNDS)) == []


# --- bounded JSON ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("literal", "shown"), [
    ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("NaN", "NaN"),
    ("1e999", "1e999, beyond the range of a float"),
    ("9" * 5000, "an integer of 5,000 digits (limit 100)"),
], ids=["inf", "-inf", "nan", "1e999", "5000-digits"])
def test_non_finite_and_huge_numbers_name_the_field(tmp_path: Path, literal: str, shown: str) -> None:
    """hidden_size: Infinity, NaN, 1e999 or a 5,000-digit integer is one line naming hidden_size."""
    text = TINY_CONFIG.read_text().replace('"hidden_size": 64', f'"hidden_size": {literal}')
    path = write_config(tmp_path / "m", text)
    assert_config_error(path, re.escape(f"{path}: field 'hidden_size' is {shown}; JSON model files hold "))


def test_a_hybrid_config_as_transformers_saves_it_keeps_its_infinite_time_step_limit(tmp_path: Path) -> None:
    """Mamba-2 configs saved by transformers (json.dumps) hold "time_step_limit": [0.0, Infinity]: the file
    is a model, not hostile input; the same literal in a field memfit reads is still refused."""
    data = Path(__file__).parent.parent / "data" / "configs" / "tiny-bamba.json"
    text = data.read_text().rstrip().rstrip("}") + ', "time_step_limit": [0.0, Infinity]}'
    spec = load_model(str(write_config(tmp_path / "m", text)))
    assert spec.has_mamba
    limit = parse_config('{"time_step_limit": [0.0, Infinity]}', origin="c")["time_step_limit"]
    assert limit == [0.0, float("inf")]
    with pytest.raises(ConfigError, match=r"^c: field 'time_step_limit' is 1e999, beyond the range"):
        parse_config('{"time_step_limit": [0.0, 1e999]}', origin="c")
    with pytest.raises(ConfigError, match=r"^c: field 'mamba_d_state' is Infinity; "):
        parse_config('{"mamba_d_state": Infinity}', origin="c")


def test_json_nested_100000_deep(tmp_path: Path) -> None:
    """JSON nested 10**5 deep (a RecursionError, 'a bug in memfit', before) is a ConfigError."""
    path = write_config(tmp_path / "m", "[" * 100_000 + "]" * 100_000)
    assert_config_error(path, re.escape(f"{path}: JSON nested deeper than 64 levels"))


def test_json_nesting_limit_is_exact() -> None:
    """MAX_JSON_DEPTH (64) levels of objects and arrays parse; 65 are refused."""
    # the config object is level 1; "x" holds 63 more nested arrays → 64 levels
    inside = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    assert parse_config(f'{{"x": {inside}}}', origin="c")["x"] is not None
    with pytest.raises(ConfigError, match="nested deeper than 64 levels"):
        parse_config(f'{{"x": [{inside}]}}', origin="c")


def test_a_number_deep_in_arrays_is_still_refused() -> None:
    """A NaN inside nested arrays, where no field can be named, is still one ConfigError."""
    with pytest.raises(ConfigError, match=r"^c: a number in an array is NaN; "):
        parse_config('{"model_type": "llama", "x": [1, [NaN]]}', origin="c")


def _sparse_file(path: Path, size: int) -> Path:
    path.parent.mkdir(exist_ok=True)
    with path.open("wb") as file:
        file.truncate(size)
    return path


def test_config_larger_than_4_mib_is_refused_unread(tmp_path: Path) -> None:
    """A 5 MiB config.json (sparse) is refused by its size, before it is read."""
    path = _sparse_file(tmp_path / "m" / "config.json", 5 * 2**20)
    assert_config_error(path, re.escape(f"{path}: 5,242,880 B is larger than any config.json (limit 4,194"))


# --- files that are not regular files --------------------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_config_symlinked_to_a_device(tmp_path: Path, device: str) -> None:
    """config.json → /dev/zero (7.5 GB and a MemoryError before) or /dev/urandom is refused unopened."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").symlink_to(device)
    assert_config_error(folder, re.escape(f"config.json: is a character device ({device}), not a regular"))
    assert_config_error(folder / "config.json", "is a character device")


@pytest.mark.parametrize("name", ["model.safetensors", "model-00001-of-00002.safetensors", "config.json",
                                  "model.safetensors.index.json"])
def test_fifo_in_a_model_folder_never_blocks(tmp_path: Path, name: str) -> None:
    """A FIFO under any model-file name (it blocked forever before) is refused without being opened."""
    folder = tmp_path / "m"
    folder.mkdir()
    if name != "config.json":
        write_config(folder, TINY_CONFIG.read_text())
    os.mkfifo(folder / name)
    assert_config_error(folder, re.escape(f"{folder / name}: is a FIFO (named pipe), not a regular file"))


def test_fifo_given_directly_never_blocks(tmp_path: Path) -> None:
    """A FIFO named *.safetensors, beside a good config, given as the model path, is refused."""
    write_config(tmp_path / "m", TINY_CONFIG.read_text())
    os.mkfifo(tmp_path / "m" / "w.safetensors")
    assert_config_error(tmp_path / "m" / "w.safetensors", "is a FIFO")


@requires_gguf
def test_fifo_named_gguf_never_blocks(tmp_path: Path) -> None:
    """A FIFO named *.gguf is refused before the GGUF reader opens it."""
    os.mkfifo(tmp_path / "m.gguf")
    assert_config_error(tmp_path / "m.gguf", "is a FIFO")


def test_socket_named_safetensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Unix socket named model.safetensors is refused as a socket."""
    write_config(tmp_path / "m", TINY_CONFIG.read_text())
    monkeypatch.chdir(tmp_path / "m")  # a short relative name: socket paths are limited to 108 bytes
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("model.safetensors")
        assert_config_error(tmp_path / "m", "model.safetensors: is a socket, not a regular file")


# --- safetensors headers ---------------------------------------------------------------------------------


def test_98_mb_safetensors_header_is_refused_unread(tmp_path: Path) -> None:
    """A header claiming 98 MB (12.7 s and 1.1 GB before) is refused by its length alone (sparse file)."""
    write_config(tmp_path / "m", TINY_CONFIG.read_text())
    path = tmp_path / "m" / "model.safetensors"
    with path.open("wb") as file:
        file.write(struct.pack("<Q", 98_000_000) + b"{")
        file.truncate(8 + 98_000_000)
    assert_config_error(tmp_path / "m", re.escape(
        f"{path}: header length 98,000,000 B exceeds memfit's limit of 16,777,216 B"))


def test_too_many_tensors_in_one_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A header declaring more tensors than MAX_HEADER_TENSORS (here lowered to 2) is refused unparsed."""
    monkeypatch.setattr(safetensors, "MAX_HEADER_TENSORS", 2)
    entry = {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
    raw = json.dumps({"a": entry, "b": entry, "c": entry}).encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(ConfigError, match="the header declares 3 tensors, more than any checkpoint file"):
        safetensors.read_safetensors_header(path)


def test_index_larger_than_32_mib_is_refused_unread(tmp_path: Path) -> None:
    """A 40 MiB model.safetensors.index.json (sparse) is refused by its size before it is parsed."""
    write_config(tmp_path / "m", TINY_CONFIG.read_text())
    index = _sparse_file(tmp_path / "m" / "model.safetensors.index.json", 40 * 2**20)
    assert_config_error(tmp_path / "m", re.escape(f"{index}: 41,943,040 B is larger than any safetensors"))


@pytest.mark.parametrize(("shape", "message"), [
    ("[18446744073709551616]", "has shape [18446744073709551616]; expected a list of at most 16 sizes"),
    ("[" + ",".join(["1"] * 17) + "]", "expected a list of at most 16 sizes"),
    ("[1" + "0" * 4000 + "]", "has shape [1" + "0" * 58 + "…; expected"),
    ("[" + "9" * 5000 + "]", "the safetensors header is not valid JSON (Exceeds the limit (4300 digits)"),
    ("[1e999]", "has shape [inf]"),
], ids=["dim-2^64", "rank-17", "4000-digit-dim", "5000-digit-dim", "inf-dim"])
def test_absurd_tensor_shapes(tmp_path: Path, shape: str, message: str) -> None:
    """Shapes past u64 or 16 dimensions are refused before their element count is multiplied out."""
    raw = f'{{"w": {{"dtype": "U8", "shape": {shape}, "data_offsets": [0, 0]}}}}'.encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        safetensors.read_safetensors_header(path)
    assert "\n" not in str(info.value)


# --- GGUF ------------------------------------------------------------------------------------------------


def gguf_string(text: str) -> bytes:
    return struct.pack("<Q", len(text.encode())) + text.encode()


def gguf_file(*fields: bytes, num_tensors: int = 0, size: int | None = None) -> bytes:
    """A GGUF v3 header with `fields` (key, type, value already packed), padded to `size` bytes."""
    raw = b"GGUF" + struct.pack("<IQQ", 3, num_tensors, len(fields)) + b"".join(fields)
    return raw.ljust(size or len(raw), b"\0")


ARCH_FIELD = gguf_string("general.architecture") + struct.pack("<I", 8) + gguf_string("llama")


@requires_gguf
@pytest.mark.parametrize(("item_type", "count", "message"), [
    (8, 10**7, "10,000,000 array items, past the limit of 4,194,304"),
    (4, 10**6, "1,000,000 array items do not fit in the file"),
    (8, 2**64 - 1, "18,446,744,073,709,551,615 array items, past the limit of 4,194,304"),
], ids=["10^7-strings", "10^6-u32", "2^64-strings"])
def test_148_byte_gguf_claiming_huge_arrays(tmp_path: Path, item_type: int, count: int, message: str) -> None:
    """A 148-byte GGUF whose array claims 10^7 items (4.8 GB, 60 s before) is refused from its header."""
    array = gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, item_type, count)
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_file(ARCH_FIELD, array, size=148))
    assert path.stat().st_size == 148
    assert_config_error(path, re.escape(f"{path}: not a readable GGUF file, truncated or corrupt ({message}"))


@requires_gguf
@pytest.mark.parametrize(("header", "message"), [
    (b"GGUF" + struct.pack("<IQQ", 3, 10**9, 0), "1,000,000,000 tensors, past the limit of 131,072"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 10**9), "1,000,000,000 metadata keys, past the limit of 65,536"),
    (b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 2**40), "1,099,511,627,776 bytes of a string do not fit"),
    (gguf_file(ARCH_FIELD, num_tensors=1) + gguf_string("t") + struct.pack("<I", 5),
     "5 dimensions, past the limit of 4"),
], ids=["10^9-tensors", "10^9-keys", "1-TiB-key", "5-dims"])
def test_gguf_counts_are_checked_before_use(tmp_path: Path, header: bytes, message: str) -> None:
    """Tensor and key counts, string lengths and tensor ranks are checked before anything is read."""
    path = tmp_path / "m.gguf"
    path.write_bytes(header.ljust(64, b"\0"))
    assert_config_error(path, re.escape(message))


@requires_gguf
def test_gguf_string_of_a_gibibyte_is_skipped_not_read(tmp_path: Path) -> None:
    """A 1 GiB metadata string (a sparse file) is skipped by its length, never copied or decoded."""
    template = gguf_string("tokenizer.chat_template") + struct.pack("<IQ", 8, 2**30)  # type STRING, length
    path = tmp_path / "m.gguf"
    with path.open("wb") as file:
        file.write(gguf_file(template))
        file.truncate(file.tell() + 2**30)
    assert_config_error(path, re.escape(f"{path}: GGUF metadata lacks general.architecture"))


@requires_gguf
def test_gguf_with_zero_heads(tmp_path: Path) -> None:
    """A GGUF with head_count = 0 (a ZeroDivisionError before) names the GGUF key and the config field."""
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in {"block_count": 2, "embedding_length": 64, "feed_forward_length": 128,
                       "attention.head_count": 0, "context_length": 256, "vocab_size": 100}.items():
        writer.add_uint32(f"llama.{key}", value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert_config_error(path, re.escape(
        f"{path}: GGUF metadata llama.attention.head_count=0 (num_attention_heads) is out of range 1..8,192"))


@requires_gguf
def test_bounded_gguf_parser_reads_what_gguf_py_reads(tmp_path: Path) -> None:
    """Every value type and tensor of a GGUF reads as gguf-py's GGUFReader reads it (arrays by count)."""
    gguf = pytest.importorskip("gguf")
    numpy = pytest.importorskip("numpy")
    from memfit.sources.gguf import _read_header, _Skipped

    path = tmp_path / "types.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    for add, key, value in [("add_uint8", "u8", 200), ("add_int8", "i8", -3), ("add_uint16", "u16", 60000),
                            ("add_int16", "i16", -300), ("add_uint32", "u32", 7), ("add_int32", "i32", -7),
                            ("add_uint64", "u64", 2**40), ("add_int64", "i64", -(2**40)),
                            ("add_float32", "f32", 1.5), ("add_float64", "f64", -2.25),
                            ("add_bool", "b", True), ("add_string", "s", "héllo"),
                            ("add_array", "ints", [1, 2, 3]), ("add_array", "strings", ["a", "bb", "ccc"])]:
        getattr(writer, add)(key, value)
    writer.add_tensor("t.weight", numpy.zeros((3, 64), dtype=numpy.float16))
    q8_0 = gguf.GGMLQuantizationType.Q8_0
    writer.add_tensor("q.weight", numpy.zeros((8, 68), dtype=numpy.uint8), raw_dtype=q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header = _read_header(path)
    reader = gguf.GGUFReader(str(path))
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        ours, theirs = header.fields[key], field.contents()
        if isinstance(ours, _Skipped):
            assert ours.count == len(theirs)
            assert ours.values is None or list(ours.values) == theirs
        else:
            assert ours == theirs
    assert [(t.name, t.dtype, t.shape, t.nbytes) for t in header.tensors] == [
        (t.name, t.tensor_type.name, tuple(reversed(t.shape.tolist())), t.n_bytes) for t in reader.tensors
    ]  # F16 3·64·2 = 384 B; Q8_0 8 rows · 2 blocks · 34 B = 544 B


# --- the CLI: exit 2, one stderr line -------------------------------------------------------------------


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


def invoke(*args: str) -> Outcome:
    """The console entry point's logic (`run`) under CliRunner's isolation, stdout and stderr apart."""
    with CliRunner().isolation() as (out, err, _):
        code = run(list(args))
        sys.stdout.flush()
        sys.stderr.flush()
        return Outcome(code, out.getvalue().decode(), err.getvalue().decode())


@pytest.mark.parametrize("command", ["estimate", "params"])
@pytest.mark.parametrize("case", ["layers", "dev-zero", "fifo", "deep-json"])
def test_cli_prints_one_error_line_and_exits_2(tmp_path: Path, command: str, case: str) -> None:
    """`memfit estimate|params PATH` on a hostile folder: exit 2, one `error:` line naming the file."""
    folder = tmp_path / "m"
    folder.mkdir()
    if case == "layers":
        write_config(folder, json.dumps(tiny_config(num_hidden_layers=10**9)))
    elif case == "dev-zero":
        (folder / "config.json").symlink_to("/dev/zero")
    elif case == "fifo":
        write_config(folder, TINY_CONFIG.read_text())
        os.mkfifo(folder / "model.safetensors")
    else:
        write_config(folder, "[" * 100_000 + "]" * 100_000)
    with never_blocks():
        outcome = invoke(command, str(folder))
    assert (outcome.exit_code, outcome.stdout) == (2, "")
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith(f"error: {folder}/")
    assert "Traceback" not in outcome.stderr
    assert "bug in memfit" not in outcome.stderr


def test_too_long_or_nul_paths_are_model_not_found() -> None:
    """A 5,000-character reference, a name too long for the OS or a NUL byte is ModelNotFound, not OSError."""
    for ref in ("x" * 5000, "/" + "x" * 300 + "/config.json", "a\0b"):
        with pytest.raises(ModelNotFound):
            load_model(ref)


# --- fuzzed configs: only MemfitError ever escapes -------------------------------------------------------


def _catalog_config_by_family() -> dict[str, dict[str, Any]]:
    models = importlib.resources.files("memfit.catalog") / "models"
    configs: dict[str, dict[str, Any]] = {}
    for entry in sorted(models.iterdir(), key=lambda item: item.name):
        config = json.loads(entry.read_text())
        configs.setdefault(config["model_type"], config)
    return configs


BASE_CONFIGS = _catalog_config_by_family()
FUZZED_KEYS = sorted({*FIELD_BOUNDS, "layer_types", "mlp_only_layers", "text_config", "vision_config",
                      "torch_dtype", "tie_word_embeddings", "attention_bias", "use_sliding_window",
                      "hidden_act", "quantization_config", "rope_scaling"})
FUZZED_VALUES = st.recursive(
    st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([0, -1, 1, 3, 64, 2**31, 2**63, 10**9, 10**30]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=5), st.booleans(), st.none(),
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(FUZZED_KEYS), children,
                                                                        max_size=3),
    max_leaves=8,
)


def _spec_or_error(text: str) -> ModelSpec | MemfitError:
    """What parsing `text` as a local config.json and building its spec gives: a spec or a MemfitError."""
    origin = "fuzz/config.json"
    try:
        config = parse_config(text, origin=origin)
        source = ModelSource(kind="config", ref="fuzz", config_json=text)
        return build_spec(config, name="fuzz", source=source, origin=origin)
    except MemfitError as err:
        return err


@settings(max_examples=FUZZ_EXAMPLES)
@given(model_type=st.sampled_from(sorted(BASE_CONFIGS)),
       changes=st.dictionaries(st.sampled_from(FUZZED_KEYS), FUZZED_VALUES, min_size=1, max_size=4))
def test_fuzzed_configs_raise_only_memfit_errors(model_type: str, changes: dict[str, Any]) -> None:
    """Any values of the known keys (huge, negative, float, inf, nested, strings) give a bounded spec or a
    one-line exit-2 MemfitError naming the file, from parsing and spec building; never another exception."""
    assert model_type in FAMILIES
    outcome = _spec_or_error(json.dumps({**BASE_CONFIGS[model_type], **changes}))  # NaN, inf → NaN, Infinity
    if isinstance(outcome, MemfitError):
        assert outcome.exit_code == 2
        assert "\n" not in str(outcome)
        assert str(outcome).startswith("fuzz/config.json: ")
        return
    assert 1 <= outcome.num_layers <= MAX_NUM_LAYERS
    assert 1 <= outcome.hidden_size <= MAX_HIDDEN_SIZE
    assert 1 <= outcome.vocab_size <= MAX_VOCAB_SIZE
    assert 1 <= outcome.max_position_embeddings <= MAX_CONTEXT_TOKENS
    # a hybrid's Mamba layers have no attention (the catalog's Jamba configs)
    assert all(1 <= att.num_heads <= MAX_NUM_HEADS for att in set(outcome.attention_specs))
