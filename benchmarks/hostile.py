"""Hostile model files through the CLI: wall time and max RSS per case → results/hostile-<date>.{csv,md}.

    python benchmarks/hostile.py                # every case, `memfit estimate PATH` and `memfit params PATH`
    python benchmarks/hostile.py --timeout 60   # seconds before a case is killed (default 60)

Each case is written to a temporary folder (sparse files where large), then run as a fresh `memfit`
process; its wall time and max RSS come from `os.wait4` on that child alone. Target (issue 15): every hostile
case ends with one `error: ...` line and exit 2 within 2 s and 200 MiB. Accepted cases show the cost at the
limits (a 16 MiB safetensors header; GGUFs with a Llama 3 sized vocabulary, a 1 GiB string, 2M strings) and
one valid config is the baseline. This script reports; it asserts nothing. Every results file records the
machine and the commit.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO / "tests" / "data" / "fixtures" / "tiny-llama" / "config.json"

WALL_TARGET_S = 2.0
RSS_TARGET_MIB = 200.0
COMMANDS = (("estimate", "--prompt-tokens", "64"), ("params",))
"""Each case runs through both: `estimate` (64 prompt tokens fit every valid case's 256-token context)."""


def _tiny(**fields: Any) -> dict[str, Any]:
    return {**json.loads(TINY_CONFIG.read_text()), **fields}


def _config(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(text)
    return folder


def _sparse(path: Path, prefix: bytes, size: int) -> Path:
    with path.open("wb") as file:
        file.write(prefix)
        file.truncate(size)
    return path


def _gguf_string(text: str) -> bytes:
    return struct.pack("<Q", len(text.encode())) + text.encode()


def _gguf(*fields: bytes, size: int | None = None) -> bytes:
    raw = b"GGUF" + struct.pack("<IQQ", 3, 0, len(fields)) + b"".join(fields)
    return raw.ljust(size or len(raw), b"\0")


def _gguf_u32(key: str, value: int) -> bytes:
    return _gguf_string(key) + struct.pack("<II", 4, value)


def _gguf_llama(**dims: int) -> list[bytes]:
    fields = {"block_count": 2, "embedding_length": 64, "feed_forward_length": 128, "attention.head_count": 4,
              "context_length": 256, "vocab_size": 100, **dims}
    return [_gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string("llama"),
            *(_gguf_u32(f"llama.{key}", value) for key, value in fields.items())]


def _layers(root: Path) -> Path:
    return _config(root / "layers", json.dumps(_tiny(num_hidden_layers=10**9)))


def _gguf_array(root: Path) -> Path:
    array = _gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 10**7)
    path = root / "array.gguf"
    path.write_bytes(_gguf(*_gguf_llama()[:1], array, size=148))
    return path


def _device(device: str) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        folder = root / Path(device).name
        folder.mkdir()
        (folder / "config.json").symlink_to(device)
        return folder
    return make


def _fifo(root: Path) -> Path:
    folder = _config(root / "fifo", TINY_CONFIG.read_text())
    os.mkfifo(folder / "model.safetensors")
    return folder


def _header(root: Path) -> Path:
    folder = _config(root / "header", TINY_CONFIG.read_text())
    _sparse(folder / "model.safetensors", struct.pack("<Q", 98_000_000) + b"{", 8 + 98_000_000)
    return folder


def _header_at_limit(root: Path) -> Path:
    """131,000 valid entries of 128 B: about 16 MiB, just under both header limits."""
    folder = _config(root / "header-16mib", TINY_CONFIG.read_text())
    entry = '{"dtype":"U8","shape":[0],"data_offsets":[0,0]}'
    raw = ("{" + ",".join(f'"model.layers.{i:06d}.mlp.experts.padding.padding.padding.weight":{entry}'
                          for i in range(131_000)) + "}").encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    return folder


def _text_config(name: str, text: str) -> Callable[[Path], Path]:
    return lambda root: _config(root / name, text)


def _gguf_zero_heads(root: Path) -> Path:
    path = root / "zero-heads.gguf"
    path.write_bytes(_gguf(*_gguf_llama(**{"attention.head_count": 0})))
    return path


def _gguf_llama3_vocab(root: Path) -> Path:
    """A GGUF header as large as Llama 3's: 128,256 token strings, scores, types and 280,147 merges."""
    tokens = b"".join(_gguf_string(f"tok{i}") for i in range(128_256))
    merges = b"".join(_gguf_string(f"a{i} b{i}") for i in range(280_147))
    arrays = [
        _gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 128_256) + tokens,
        _gguf_string("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 128_256) + bytes(4 * 128_256),
        _gguf_string("tokenizer.ggml.token_type") + struct.pack("<IIQ", 9, 5, 128_256) + bytes(4 * 128_256),
        _gguf_string("tokenizer.ggml.merges") + struct.pack("<IIQ", 9, 8, 280_147) + merges,
    ]
    path = root / "llama3-vocab.gguf"
    path.write_bytes(_gguf(*_gguf_llama(vocab_size=128_256), *arrays))
    return path


def _gguf_long_string(root: Path) -> Path:
    """A valid tiny llama GGUF whose chat template claims 1 GiB (a sparse file): skipped, never copied."""
    path = root / "long-string.gguf"
    template = _gguf_string("tokenizer.chat_template") + struct.pack("<IQ", 8, 2**30)
    raw = _gguf(*_gguf_llama(), template)
    return _sparse(path, raw, len(raw) + 2**30)


def _gguf_many_strings(root: Path) -> Path:
    """A tiny llama GGUF with 2,097,152 empty token strings (MAX_GGUF_STRING_ITEMS), each walked."""
    count = 2_097_152
    tokens = _gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, count)
    raw = _gguf(*_gguf_llama(), tokens)
    return _sparse(root / "many-strings.gguf", raw, len(raw) + 8 * count)


def _sparse_config(root: Path) -> Path:
    folder = root / "config-5mib"
    folder.mkdir()
    _sparse(folder / "config.json", b"{", 5 * 2**20)
    return folder


_TINY_TEXT = TINY_CONFIG.read_text()
CASES: tuple[tuple[str, str, Callable[[Path], Path], bool], ...] = (
    ("baseline", "a valid 2-layer config.json (the CLI's own cost)",
     _text_config("baseline", _TINY_TEXT), False),
    ("layers-1e9", "1 KB config.json, num_hidden_layers: 10**9", _layers, True),
    ("gguf-array-1e7", "148-byte GGUF, a string array claiming 10**7 items", _gguf_array, True),
    ("dev-zero", "config.json symlinked to /dev/zero", _device("/dev/zero"), True),
    ("dev-urandom", "config.json symlinked to /dev/urandom", _device("/dev/urandom"), True),
    ("fifo-safetensors", "a FIFO named model.safetensors beside a valid config", _fifo, True),
    ("header-98mb", "safetensors header length 98,000,000 B (sparse file)", _header, True),
    ("json-depth-1e5", "config.json of arrays nested 10**5 deep",
     _text_config("deep", "[" * 100_000 + "]" * 100_000), True),
    ("hidden-infinity", "hidden_size: Infinity",
     _text_config("inf", _TINY_TEXT.replace('"hidden_size": 64', '"hidden_size": Infinity')), True),
    ("hidden-nan", "hidden_size: NaN",
     _text_config("nan", _TINY_TEXT.replace('"hidden_size": 64', '"hidden_size": NaN')), True),
    ("digits-5000", "hidden_size: a 5,000-digit integer",
     _text_config("digits", _TINY_TEXT.replace('"hidden_size": 64', '"hidden_size": ' + "9" * 5000)), True),
    ("hidden-1e30", "hidden_size: 1e30 (a float)", _text_config("float", json.dumps(_tiny(hidden_size=1e30))),
     True),
    ("kv-heads-0", "num_key_value_heads: 0", _text_config("kv0", json.dumps(_tiny(num_key_value_heads=0))),
     True),
    ("gguf-heads-0", "GGUF with llama.attention.head_count = 0", _gguf_zero_heads, True),
    ("config-5mib", "a 5 MiB config.json (sparse)", _sparse_config, True),
    ("header-16mib", "accepted: a 16 MiB safetensors header of 131,000 tensors", _header_at_limit, False),
    ("gguf-llama3-vocab", "accepted: a GGUF with Llama 3's vocabulary and merges (9 MB header)",
     _gguf_llama3_vocab, False),
    ("gguf-1gib-string", "accepted: a GGUF whose chat template claims 1 GiB (sparse)",
     _gguf_long_string, False),
    ("gguf-2m-strings", "accepted: a GGUF with 2,097,152 token strings (the limit)",
     _gguf_many_strings, False),
)
"""(case, description, writer of the hostile file or folder, hostile?): hostile cases should exit 2."""


def _memfit() -> list[str]:
    script = shutil.which("memfit", path=str(Path(sys.executable).parent)) or shutil.which("memfit")
    return [script] if script else [sys.executable, "-m", "memfit"]


def _run(command: list[str], *, timeout_s: float) -> tuple[int, float, float, str]:
    """(exit code, wall seconds, max RSS MiB, first stderr line) of one child, killed after timeout_s."""
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout_s:
                child.kill()
                pid, status, usage = os.wait4(child.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        lines = stderr.read().decode(errors="replace").splitlines()
    first = lines[0][:200] if lines else ""
    if len(lines) > 1:
        first += f" (+{len(lines) - 1} more lines)"
    return child.returncode, wall, usage.ru_maxrss / 1024, first


def measure(timeout_s: float) -> list[dict[str, Any]]:
    rows = []
    memfit = _memfit()
    with tempfile.TemporaryDirectory(prefix="memfit-hostile-") as tmp:
        root = Path(tmp)
        for case, description, write, hostile in CASES:
            path = write(root)
            for name, *flags in COMMANDS:
                code, wall, rss, line = _run([*memfit, name, str(path), *flags], timeout_s=timeout_s)
                rows.append({
                    "case": case, "command": name, "description": description, "hostile": hostile,
                    "exit_code": code, "wall_s": round(wall, 3), "max_rss_mib": round(rss, 1),
                    "meets_target": (code == 2 if hostile else code == 0) and wall < WALL_TARGET_S
                    and rss < RSS_TARGET_MIB,
                    "stderr": line.replace(tmp, "<tmp>"),
                })
                print(f"{case:18} {name:8} exit {code:3} {wall:6.2f} s {rss:7.1f} MiB  {line[:80]}")
    return rows


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _environment() -> dict[str, str]:
    dirty = _git("status", "--porcelain", "--", "src")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git("rev-parse", "HEAD") + (" (src has uncommitted changes)" if dirty else ""),
        "cpu_count": str(os.cpu_count()),
        "load_average_1min_at_start": f"{os.getloadavg()[0]:.2f}",
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def write_results(rows: list[dict[str, Any]], environment: dict[str, str]) -> tuple[Path, Path]:
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"hostile-{datetime.date.today().isoformat()}"
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    with csv_path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# memfit hostile-input benchmark", ""]
    lines += [f"- {key}: {value}" for key, value in environment.items()]
    lines += [f"- target: hostile cases exit 2 with one `error:` line, under {WALL_TARGET_S} s and "
              f"{RSS_TARGET_MIB:.0f} MiB max RSS; accepted cases exit 0", "",
              "| case | command | exit | wall (s) | max RSS (MiB) | meets | stderr |",
              "|---|---|---|---|---|---|---|"]
    for row in rows:
        stderr = row["stderr"].replace("|", "\\|")
        lines.append(f"| {row['case']} | {row['command']} | {row['exit_code']} | {row['wall_s']:.3f} | "
                     f"{row['max_rss_mib']:.1f} | {'yes' if row['meets_target'] else 'NO'} | `{stderr}` |")
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a case is killed")
    args = parser.parse_args()
    environment = _environment()
    rows = measure(args.timeout)
    for path in write_results(rows, environment):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
