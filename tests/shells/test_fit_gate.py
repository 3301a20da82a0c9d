"""`--fail-if-not-fit`: a CI gate's exit status (3 when the job does not fit), the output unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tests.shells.test_cli import assert_one_error_line, invoke

from memfit.cli.commands import EXIT_DOES_NOT_FIT

README = Path(__file__).resolve().parents[2] / "README.md"
# Llama-3.1-8B full fine-tune (bf16, AdamW, 2,048 tokens) needs ~75.5 GiB on device: not 24 GiB, yes 141 GB
TOO_BIG = ("Llama-3.1-8B", "--task", "train", "--gpu", "24GiB")
FITS = ("Llama-3.2-1B", "--gpu", "H100-SXM-80GB")


def test_exit_code_is_distinct_from_the_error_codes() -> None:
    """The gate's code is 3: not success (0), not a failure (1), not bad input (2)."""
    assert EXIT_DOES_NOT_FIT == 3


def test_estimate_that_does_not_fit_exits_3_with_the_usual_output() -> None:
    """The human view is printed exactly as without the flag, stderr stays empty, exit 3."""
    plain = invoke("estimate", *TOO_BIG)
    gated = invoke("estimate", *TOO_BIG, "--fail-if-not-fit")
    assert plain.exit_code == 0
    assert "does not fit on 24GiB" in plain.stdout
    assert gated.exit_code == 3
    assert gated.stdout == plain.stdout
    assert gated.stderr == ""


def test_estimate_json_that_does_not_fit_exits_3() -> None:
    """With --json the JSON is printed whole (fits: false) and the exit code is 3."""
    outcome = invoke("estimate", *TOO_BIG, "--json", "--fail-if-not-fit")
    assert outcome.exit_code == 3
    assert json.loads(outcome.stdout)["fits"] is False


def test_estimate_that_fits_exits_0() -> None:
    """A job that fits passes the gate: exit 0, fits: true."""
    outcome = invoke("estimate", *FITS, "--json", "--fail-if-not-fit")
    assert outcome.exit_code == 0, outcome.stderr
    assert json.loads(outcome.stdout)["fits"] is True


def test_gate_with_out_writes_the_file_then_exits_3(tmp_path: Path) -> None:
    """With --out the file is written in full before the exit status says 'does not fit'."""
    target = tmp_path / "estimate.json"
    outcome = invoke("estimate", *TOO_BIG, "--json", "--out", str(target), "--fail-if-not-fit")
    assert outcome.exit_code == 3
    assert outcome.stdout == ""
    assert json.loads(target.read_text())["fits"] is False


def test_gate_without_gpu_is_bad_input_before_the_model_is_read() -> None:
    """Without --gpu there is nothing to fit: one line naming both flags, exit 2, even for a bad model."""
    outcome = invoke("estimate", "No-Such-Model-7B", "--fail-if-not-fit")
    assert_one_error_line(outcome, 2, mentions="--fail-if-not-fit needs --gpu")


@pytest.mark.parametrize(
    ("args", "fits", "exit_code"),
    [
        ((*TOO_BIG, "--fail-if-not-fit"), False, 3),
        ((*TOO_BIG, "--maximize", "batch", "--fail-if-not-fit"), False, 3),
        (TOO_BIG, False, 0),
        ((*FITS, "--fail-if-not-fit"), True, 0),
    ],
    ids=["changes", "maximize", "no flag", "fits"],
)
def test_plan_gate_follows_the_job_as_asked(args: tuple[str, ...], fits: bool, exit_code: int) -> None:
    """plan exits 3 when the job as asked (the baseline) does not fit, after printing the whole plan."""
    outcome = invoke("plan", *args, "--json")
    assert outcome.exit_code == exit_code, outcome.stderr
    data = json.loads(outcome.stdout)
    assert data["schema"] == "memfit.plan/1"
    assert data["baseline"]["fits"] is fits


@pytest.mark.parametrize("command", ["estimate", "plan"])
def test_help_documents_the_exit_code(command: str) -> None:
    """`--help` names the flag and its exit code 3."""
    outcome = invoke(command, "--help")
    text = " ".join(outcome.stdout.split())
    assert "--fail-if-not-fit" in text
    assert "Exit with code 3" in text
    assert "3 with --fail-if-not-fit" in text


def test_readme_documents_the_exit_code() -> None:
    """README's 'Errors and exit codes' section names --fail-if-not-fit and exit 3."""
    section = README.read_text(encoding="utf-8").split("## Errors and exit codes", 1)[1].split("\n## ", 1)[0]
    assert "--fail-if-not-fit" in section
    assert re.search(r"exits? 3", section)
