"""What the CLI writes: `--out FILE` (regular files only, through symlinks, mode kept, all or nothing)
and a stderr that carries memfit's one-line errors and nothing from its libraries."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import requires_transformers
from tests.shells.test_cli import assert_one_error_line, invoke

from memfit import api
from memfit.cli import commands

MODEL = "Llama-3.2-1B"
PARAMS_JSON_ARGS = ("params", MODEL, "--json")


@pytest.fixture
def umask() -> Iterator[Any]:
    """Set the process umask for one test (returns a setter); the original is put back afterwards."""
    original = os.umask(0o022)
    yield os.umask
    os.umask(original)


def expected_params_json() -> dict[str, Any]:
    return api.params_report(MODEL)


def test_existing_file_keeps_its_mode(tmp_path: Path, umask: Any) -> None:
    """An existing 0644 file is replaced with the new JSON and stays 0644, even under umask 077."""
    target = tmp_path / "params.json"
    target.write_text("old")
    target.chmod(0o644)
    umask(0o077)
    outcome = invoke(*PARAMS_JSON_ARGS, "--out", str(target))
    assert outcome.exit_code == 0, outcome.stderr
    assert json.loads(target.read_text()) == expected_params_json()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_existing_file_keeps_an_unusual_mode(tmp_path: Path, umask: Any) -> None:
    """A 0640 file stays 0640 (not the umask's 0644, not mkstemp's 0600)."""
    target = tmp_path / "params.json"
    target.write_text("old")
    target.chmod(0o640)
    umask(0o022)
    assert invoke(*PARAMS_JSON_ARGS, "--out", str(target)).exit_code == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_new_file_gets_the_umask_default(tmp_path: Path, umask: Any, mask: int, mode: int) -> None:
    """A new file is created as a plain open() would: 0666 minus the umask."""
    target = tmp_path / "new.json"
    umask(mask)
    assert invoke(*PARAMS_JSON_ARGS, "--out", str(target)).exit_code == 0
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_symlink_is_written_through(tmp_path: Path) -> None:
    """A symlink stays a symlink; the file it points to (in another folder) gets the output."""
    real_dir, link_dir = tmp_path / "real", tmp_path / "links"
    real_dir.mkdir()
    link_dir.mkdir()
    real = real_dir / "params.json"
    real.write_text("old")
    real.chmod(0o644)
    link = link_dir / "out.json"
    link.symlink_to(Path("..") / "real" / "params.json")
    outcome = invoke(*PARAMS_JSON_ARGS, "--out", str(link))
    assert outcome.exit_code == 0, outcome.stderr
    assert link.is_symlink()
    assert os.readlink(link) == str(Path("..") / "real" / "params.json")
    assert json.loads(real.read_text()) == expected_params_json()
    assert stat.S_IMODE(real.stat().st_mode) == 0o644
    assert sorted(p.name for p in real_dir.iterdir()) == ["params.json"]  # no temp file left
    assert sorted(p.name for p in link_dir.iterdir()) == ["out.json"]


def test_symlink_chain_is_written_through(tmp_path: Path) -> None:
    """A link to a link to a file: both links stay, the file gets the output."""
    real = tmp_path / "real.json"
    real.write_text("old")
    (tmp_path / "one.json").symlink_to("real.json")
    (tmp_path / "two.json").symlink_to("one.json")
    assert invoke(*PARAMS_JSON_ARGS, "--out", str(tmp_path / "two.json")).exit_code == 0
    assert (tmp_path / "one.json").is_symlink()
    assert (tmp_path / "two.json").is_symlink()
    assert json.loads(real.read_text()) == expected_params_json()


def test_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    """A symlink to a file that does not exist yet creates that file, as `>` in a shell would."""
    link = tmp_path / "out.json"
    link.symlink_to("made.json")
    assert invoke(*PARAMS_JSON_ARGS, "--out", str(link)).exit_code == 0
    assert link.is_symlink()
    assert json.loads((tmp_path / "made.json").read_text()) == expected_params_json()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path (AF_UNIX socket paths are limited to about 100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="mf") as folder:
        yield Path(folder)


def _make_special(kind: str, path: Path) -> Any:
    if kind == "FIFO":
        os.mkfifo(path)
        return None
    if kind == "folder":
        path.mkdir()
        return None
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    return server


@pytest.mark.parametrize("kind", ["FIFO", "folder", "socket"])
@pytest.mark.parametrize("via_link", [False, True])
def test_non_regular_target_is_refused(short_dir: Path, kind: str, via_link: bool) -> None:
    """A FIFO, folder or socket (or a symlink to one) is one `error:` line, exit 2, left as it was."""
    special = short_dir / "special"
    keep = _make_special(kind, special)
    try:
        target = special
        if via_link:
            target = short_dir / "link"
            target.symlink_to(special)
        before = os.stat(special)
        outcome = invoke(*PARAMS_JSON_ARGS, "--out", str(target))
        assert_one_error_line(outcome, 2, mentions=f"is a {kind}")
        assert "--out" in outcome.stderr
        after = os.stat(special)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
        assert sorted(p.name for p in short_dir.iterdir()) == sorted(
            ["special", "link"] if via_link else ["special"]
        )
    finally:
        if keep is not None:
            keep.close()


def test_character_device_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A character device (/dev/full, /dev/null) is refused at parse time: exit 2, the model never loaded."""
    device = tmp_path / "full"
    device.write_text("")
    real_stat = os.stat

    def fake_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        result = real_stat(path, *args, **kwargs)
        if Path(path) == device:  # a character device as /dev/full reports it, without touching /dev
            fields = list(result)
            fields[0] = stat.S_IFCHR | 0o666
            return os.stat_result(fields)
        return result

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(commands.os, "stat", fake_stat)
    monkeypatch.setattr("memfit.api.load_model", no_model)
    outcome = invoke("estimate", MODEL, "--json", "--out", str(device))
    assert_one_error_line(outcome, 2, mentions="is a character device; --out writes regular files only")
    assert device.read_text() == ""


def test_symlink_loop_is_refused(tmp_path: Path) -> None:
    """Two links pointing at each other: one `error:` line, exit 2, nothing written."""
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    assert_one_error_line(invoke(*PARAMS_JSON_ARGS, "--out", str(tmp_path / "a")), 2, mentions="symlink loop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_failed_rename_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the final rename fails, the old file is untouched, the temp file is gone, one line, exit 1."""
    target = tmp_path / "params.json"
    target.write_text("old")

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(commands.os, "replace", failing_replace)
    outcome = invoke(*PARAMS_JSON_ARGS, "--out", str(target))
    assert_one_error_line(outcome, 1, mentions="No space left on device")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["params.json"]


def test_failed_write_removes_the_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half-way (disk full) leaves the old file and no temp file behind."""
    target = tmp_path / "params.json"
    target.write_text("old")
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def write(self, text: str) -> int:
            self.handle.write(text[:10])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(commands.os, "fdopen", lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k)))
    outcome = invoke(*PARAMS_JSON_ARGS, "--out", str(target))
    assert_one_error_line(outcome, 1, mentions="No space left on device")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["params.json"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_root_keeps_the_owner_of_a_replaced_file(tmp_path: Path) -> None:
    """Run as root, replacing another user's file keeps that user and group as its owner."""
    target = tmp_path / "params.json"
    target.write_text("old")
    os.chown(target, 4321, 4322)
    target.chmod(0o664)
    assert invoke(*PARAMS_JSON_ARGS, "--out", str(target)).exit_code == 0
    status = target.stat()
    assert (status.st_uid, status.st_gid, stat.S_IMODE(status.st_mode)) == (4321, 4322, 0o664)


def test_library_logs_and_warnings_stay_off_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Log records and Python warnings raised while a command runs never reach stderr; all is put back."""
    real_load = api.load_model

    def chatty_load(*args: Any, **kwargs: Any) -> Any:
        logging.getLogger("transformers.modeling_rope_utils").warning("Unrecognized keys in rope")
        logging.getLogger("huggingface_hub").error("Retrying in 4s")
        warnings.warn("`torch_dtype` is deprecated", FutureWarning, stacklevel=1)
        return real_load(*args, **kwargs)

    monkeypatch.setattr("memfit.api.load_model", chatty_load)
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    outcome = invoke("params", MODEL)
    assert outcome.exit_code == 0
    assert outcome.stderr == ""
    assert "TRANSFORMERS_VERBOSITY" not in os.environ
    assert logging.root.manager.disable == logging.NOTSET


def _write_unmapped_config(folder: Path) -> Path:
    """A tiny stablelm config (no family module: counted by transformers on the meta device) with a stray
    rope key, which transformers 5 reports as '[transformers] Unrecognized keys in `rope_parameters`'."""
    config = {
        "model_type": "stablelm", "architectures": ["StableLmForCausalLM"], "vocab_size": 1000,
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "max_position_embeddings": 256, "torch_dtype": "bfloat16",
        "partial_rotary_factor": 0.25, "rope_scaling": {"type": "linear", "factor": 2.0, "stray": 1},
    }
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@requires_transformers
def test_the_unmapped_config_makes_transformers_log(tmp_path: Path) -> None:
    """The config below does make transformers log (so the stderr check after it can fail)."""
    from memfit.trace.meta import build_on_meta

    records = _Records()
    logger = logging.getLogger("transformers")
    logger.addHandler(records)
    try:
        build_on_meta(json.loads(_write_unmapped_config(tmp_path).read_text()))
    finally:
        logger.removeHandler(records)
    assert any("Unrecognized keys" in message for message in records.messages)


@requires_transformers
def test_transformers_log_lines_stay_off_stderr(tmp_path: Path) -> None:
    """An unmapped model counted on the meta device, in a fresh process: the estimate, and empty stderr."""
    config = _write_unmapped_config(tmp_path)
    argv = [sys.executable, "-m", "memfit", "estimate", str(config), "--prompt-tokens", "64", "--json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRANSFORMERS_", "HF_HUB_VERBOSITY"))}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"]["family"] == "stablelm"
    assert done.stderr == ""
