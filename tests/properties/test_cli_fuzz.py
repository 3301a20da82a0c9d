"""Fuzzing the command line: any argv built from memfit's own flags and hostile values ends in success, a
does-not-fit exit (3, with --fail-if-not-fit) or one `error:` line with exit 1 or 2 — never a traceback,
never "a bug in memfit", never a non-integer byte value in --json output, never the network."""

from __future__ import annotations

import json
import sys
from typing import Any

from hypothesis import event, given, settings
from tests.strategies import FUZZ_EXAMPLES, cli_argvs
from typer.testing import CliRunner

from memfit.cli import run

CLI_FUZZ_EXAMPLES = max(1, FUZZ_EXAMPLES // 2)
"""Each example is a whole CLI call (rendering included, 10-50 ms): half the API's budget."""


def _invoke(argv: list[str]) -> tuple[int, str, str]:
    runner = CliRunner()
    with runner.isolation(env={"HF_HUB_OFFLINE": "1"}) as (out, err, _):
        code = run(argv)
        sys.stdout.flush()
        sys.stderr.flush()
        return code, out.getvalue().decode(), err.getvalue().decode()


def _int_bytes(data: Any, path: str = "") -> list[str]:
    """Paths of `*bytes` values and breakdown entries that are not ints."""
    bad: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}"
            if (key.endswith("bytes") or path.endswith("breakdown")) and value is not None \
                    and type(value) is not int:
                bad.append(f"{where}={value!r}")
            bad += _int_bytes(value, where)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            bad += _int_bytes(value, f"{path}[{i}]")
    return bad


@settings(max_examples=CLI_FUZZ_EXAMPLES)
@given(argv=cli_argvs())
def test_any_argv_ends_in_a_result_or_one_error_line(argv: list[str]) -> None:
    code, stdout, stderr = _invoke(argv)
    event(f"exit {code}")
    assert code in (0, 1, 2, 3), (argv, code, stderr)
    if code in (1, 2):
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, (argv, stderr)
        assert lines[0].startswith("error: "), (argv, stderr)
        assert "a bug in memfit" not in lines[0], (argv, stderr)
        assert stdout == "", (argv, stdout)
        return
    assert stderr == "", (argv, stderr)
    if "--json" in argv:
        assert _int_bytes(json.loads(stdout)) == [], argv
