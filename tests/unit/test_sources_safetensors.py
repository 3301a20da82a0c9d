"""safetensors headers → TensorInfo: exact bytes from data_offsets, weights never read, bad files one line."""

import io
import json
import struct
from pathlib import Path

import pytest

from memfit.core.errors import ConfigError
from memfit.sources.safetensors import (
    load_safetensors_checkpoint,
    load_safetensors_index,
    read_safetensors_header,
    tensors_from_header,
)

ELEMENT_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4, "F8_E4M3": 1, "U8": 1}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> Path:
    """Write a valid safetensors file: 8-byte LE header length, JSON header, zeroed data."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        numel = 1
        for dim in shape:
            numel *= dim
        nbytes = numel * ELEMENT_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return path


def test_header_gives_exact_bytes_per_tensor(tmp_path: Path) -> None:
    """A bf16 [100, 64] tensor is 12,800 B and an fp32 [64] tensor 256 B, in storage order."""
    # 100·64·2 = 12,800 B; 64·4 = 256 B
    path = write_safetensors(
        tmp_path / "m.safetensors",
        {
            "model.embed_tokens.weight": ("BF16", [100, 64]),
            "model.norm.weight": ("F32", [64]),
        },
    )
    tensors = read_safetensors_header(path)
    assert [(t.name, t.dtype, t.shape, t.nbytes) for t in tensors] == [
        ("model.embed_tokens.weight", "BF16", (100, 64), 12_800),
        ("model.norm.weight", "F32", (64,), 256),
    ]


class RecordingFile(io.BytesIO):
    """An in-memory file that records the size of every read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.sizes.append(-1 if size is None else size)
        return super().read(size)


def test_reads_only_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading the header never reads past 8 + N bytes, whatever the data size."""
    path = write_safetensors(tmp_path / "m.safetensors", {"w": ("F32", [256, 256])})  # 262,144 data bytes
    (header_bytes,) = struct.unpack("<Q", path.read_bytes()[:8])
    file = RecordingFile(path.read_bytes())
    monkeypatch.setattr(Path, "open", lambda self, *args, **kwargs: file)
    read_safetensors_header(path)
    assert file.sizes == [8, header_bytes]


def test_real_writer_file_matches(tmp_path: Path) -> None:
    """A file written by the safetensors library parses to its shapes and exact bytes."""
    numpy = pytest.importorskip("numpy")
    st_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "real.safetensors"
    arrays = {"a": numpy.zeros((3, 5), dtype=numpy.float16), "b": numpy.zeros(7, dtype=numpy.int32)}
    st_numpy.save_file(arrays, str(path))
    # a: 3·5·2 = 30 B; b: 7·4 = 28 B
    assert {(t.name, t.dtype, t.shape, t.nbytes) for t in read_safetensors_header(path)} == {
        ("a", "F16", (3, 5), 30),
        ("b", "I32", (7,), 28),
    }


def test_sharded_index_sums_every_shard(tmp_path: Path) -> None:
    """An index over two shards yields the tensors of both, 12,800 + 16,384 B."""
    # shard 1: embed 100·64·2 = 12,800 B; shard 2: down [64, 128] bf16 = 64·128·2 = 16,384 B
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors", {"embed": ("BF16", [100, 64])})
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors", {"down": ("BF16", [64, 128])})
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(
        json.dumps(
            {
                "metadata": {"total_size": 29_184},
                "weight_map": {
                    "embed": "model-00001-of-00002.safetensors",
                    "down": "model-00002-of-00002.safetensors",
                },
            }
        )
    )
    checkpoint = load_safetensors_index(index, quant_method=None)
    assert checkpoint.format == "safetensors"
    assert checkpoint.total_bytes == 29_184


def test_quantized_checkpoint_counted_as_stored(tmp_path: Path) -> None:
    """GPTQ tensors keep their packed storage: I32 qweight [8, 64] is 2,048 B; quant_method is recorded."""
    # qweight 8·64·4 = 2,048; scales 1·64·2 = 128; qzeros 1·8·4 = 32; g_idx 64·4 = 256 → 2,464 B
    path = write_safetensors(
        tmp_path / "model.safetensors",
        {
            "q.qweight": ("I32", [8, 64]),
            "q.scales": ("F16", [1, 64]),
            "q.qzeros": ("I32", [1, 8]),
            "q.g_idx": ("I32", [64]),
        },
    )
    checkpoint = load_safetensors_checkpoint([path], quant_method="gptq")
    assert (checkpoint.quant_method, checkpoint.total_bytes) == ("gptq", 2_464)


def test_truncated_header_is_config_error(tmp_path: Path) -> None:
    """A file cut inside its header is a one-line ConfigError saying it is truncated."""
    path = write_safetensors(tmp_path / "m.safetensors", {"w": ("F32", [4])})
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ConfigError, match=r"truncated: its header needs") as info:
        read_safetensors_header(path)
    assert "\n" not in str(info.value)


def test_truncated_data_is_config_error(tmp_path: Path) -> None:
    """A file cut inside its data (a partial download) names the tensor that runs past the end."""
    path = write_safetensors(tmp_path / "m.safetensors", {"w": ("F32", [1024])})
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ConfigError, match=r"truncated: tensor 'w' ends at data byte 4,096"):
        read_safetensors_header(path)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x01\x02", "too short"),
        (struct.pack("<Q", 10**12) + b"{}", "exceeds 100,000,000 B"),
        (struct.pack("<Q", 5) + b"nope!", "not valid JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    ],
    ids=["short", "huge-length", "not-json", "not-object"],
)
def test_garbage_is_config_error(tmp_path: Path, payload: bytes, message: str) -> None:
    """Garbage instead of a safetensors header is a one-line ConfigError."""
    path = tmp_path / "bad.safetensors"
    path.write_bytes(payload)
    with pytest.raises(ConfigError, match=message) as info:
        read_safetensors_header(path)
    assert "\n" not in str(info.value)


def test_offsets_must_match_shape() -> None:
    """An F32 [4] tensor spanning 8 bytes (not 16) is rejected."""
    header = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}
    with pytest.raises(ConfigError, match=r"needs 16 B but its data_offsets span 8 B"):
        tensors_from_header(header, origin="x")


def test_index_with_missing_shard_is_config_error(tmp_path: Path) -> None:
    """An index naming a shard that is not on disk is a ConfigError naming the shard file."""
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "model-00001-of-00001.safetensors"}}))
    with pytest.raises(ConfigError, match=r"model-00001-of-00001.safetensors: missing"):
        load_safetensors_index(index)
