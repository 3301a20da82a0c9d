"""The trace child process: `python -m memfit.trace.worker` reads one JSON request on stdin and prints one
`memfit.estimate/1` line on stdout (or `{"error": ...}`), so the shim loads before torch and the
process-global patches never leak into the caller.

Request: {"spec": <encoded ModelSpec>, "workload": <workload dict>, "gpu": <encoded Gpu> | null,
"assumptions": [str, ...] (optional: the parent's version notes)}.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from memfit.trace import boot


def main() -> int:
    started = boot.load()                      # before torch, always
    request = json.loads(sys.stdin.read())
    try:
        from memfit.core.errors import MemfitError
        from memfit.trace.run import trace_request

        estimate = trace_request(request, started, progress=_progress())
        print(json.dumps(estimate.to_dict()))
        return 0
    except MemfitError as err:
        print(json.dumps({"error": str(err), "kind": type(err).__name__}))
        return 0
    except Exception as err:  # anything the model code raises is reported in one line, not a traceback
        print(json.dumps({"error": _explain(err), "kind": "EngineUnavailable"}))
        return 0


DATA_DEPENDENT = ("DataDependentOutputException", "DynamicOutputShapeException",
                  "GuardOnDataDependentSymNode", "UnsupportedOperatorException")
"""FakeTensor errors for ops whose result depends on values (.item(), nonzero, data-dependent shapes)."""


def _explain(err: BaseException) -> str:
    kind = type(err).__name__
    if kind in DATA_DEPENDENT:
        return (f"this model's code makes a data-dependent choice the trace cannot follow ({kind}: "
                f"{_one_line(err)[:120]}); use engine=analytic, or engine=measure on a GPU")
    return f"the trace failed in the model code ({kind}: {_one_line(err)}); use engine=analytic"


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else ""


def _progress() -> Any:
    """A rich spinner on stderr when it is a terminal, else None."""
    if not sys.stderr.isatty():
        return None
    try:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    except ImportError:
        return None
    return Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=True)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)          # skip tearing down torch's and transformers' module graphs (about a second)
