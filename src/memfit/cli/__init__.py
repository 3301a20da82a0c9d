"""memfit's command line: typer + rich over the public API, with no formulas.

`main()` is the console script. It runs the typer app with `standalone_mode=False` so that every failure,
click's usage errors included, is exactly one stderr line `error: <message>` and an exit code: 2 for bad
input, 1 for anything else, 0 on success (a job that does not fit is a success, unless `--fail-if-not-fit`
asks for exit 3). `MEMFIT_DEBUG=1` re-raises so the traceback shows.

stderr carries nothing else: while a command runs (`serve` aside, whose server logs are wanted), Python
warnings are ignored, logging is disabled, and the environment tells transformers, huggingface_hub and child
processes (the trace worker) to stay quiet. `--offline` (or HF_HUB_OFFLINE=1) puts huggingface_hub in its
offline mode for the whole command, before anything imports it: no network call of any kind.

Start-up is kept short (`memfit --help` and `memfit params` well under 0.3 s): rich, the API and the catalog
load inside the command that needs them, and the plain str/int/Path flags are converted without the
pydantic adapters typer ≥ 0.2x builds per parameter (100+ ms of imports for values we parse ourselves).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memfit.cli.commands import app

__all__ = ["app", "main", "run"]

_QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "critical",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_VERBOSITY": "critical",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "PYTHONWARNINGS": "ignore",
}
"""Read by transformers and huggingface_hub when they set up their loggers (at first import) and by Python
in child processes: no library chatter on stderr from this process or the trace worker."""


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """No warnings or log records on stderr while a command runs; everything is put back afterwards."""
    saved_env = {name: os.environ.get(name) for name in _QUIET_ENV}
    saved_disable = logging.root.manager.disable
    os.environ.update(_QUIET_ENV)
    logging.disable(logging.CRITICAL)  # memfit never logs; its libraries' records would reach stderr
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(saved_disable)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _offline_asked(args: list[str]) -> bool:
    """True when the command line holds --offline (before a `--`, if any)."""
    options = args[: args.index("--")] if "--" in args else args
    return "--offline" in options


def _scope(args: list[str], debug: bool) -> contextlib.ExitStack:
    """The quiet and offline settings this command line runs under (see the module docstring)."""
    stack = contextlib.ExitStack()
    if not debug and (not args or args[0] != "serve"):
        stack.enter_context(_quiet_libraries())
    if _offline_asked(args):
        from memfit.sources.hub import offline_hub

        stack.enter_context(offline_hub())
    return stack


def _click_errors() -> tuple[type[Exception], type[Exception]]:
    """click's ClickException and UsageError as typer raises them (typer ≥ 0.2x vendors click)."""
    import typer

    by_name = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
    return by_name["ClickException"], by_name["UsageError"]


def _fail(message: str, exit_code: int) -> int:
    lines = [line for line in str(message).strip().splitlines() if line.strip()]
    sys.stderr.write(f"error: {lines[0] if lines else 'unexpected failure'}\n")
    sys.stderr.flush()
    return exit_code


def _plain_coercion(command: Any) -> None:
    """Convert str, int and Path flags directly instead of through typer's pydantic adapters.

    typer ≥ 0.2x builds a pydantic TypeAdapter per parameter on first use; for these three types a
    direct conversion gives the same values. Older typer (no `_runtime_param`) is left alone.
    """
    try:
        from typer._coercion import RuntimeParam
    except ImportError:
        return
    import typer

    class _Plain(RuntimeParam):
        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if self.annotation is bool:
                return bool(value)
            try:
                return self.annotation(value)
            except (TypeError, ValueError) as err:
                kind = "an integer" if self.annotation is int else self.annotation.__name__
                raise typer.BadParameter(f"{value!r} is not {kind}", ctx=ctx, param=param) from err

    def plain(param: Any) -> Any:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", False) is not None:
            return param
        if descriptor.annotation in (str, int, bool, Path) and descriptor.file_annotation is None:
            param._runtime_param = _Plain(
                annotation=descriptor.annotation, parameter_info=descriptor.parameter_info
            )
        return param

    def with_plain_help(cmd: Any) -> None:
        make_help = cmd.get_help_option
        cmd.get_help_option = lambda ctx: plain(make_help(ctx))

    for cmd in (command, *getattr(command, "commands", {}).values()):
        with_plain_help(cmd)
        for param in cmd.params:
            plain(param)


def _only_command(name: str) -> Any:
    """A group holding only the command `name` (None if there is no such command).

    Building every command's click parameters costs tens of milliseconds; a run needs just one. Help for
    the whole app (`memfit --help`) still builds all of them.
    """
    import typer
    import typer.main

    for info in app.registered_commands:
        callback = info.callback
        if (info.name or getattr(callback, "__name__", "").replace("_", "-")) == name:
            solo = typer.Typer(
                name="memfit",
                add_completion=False,
                pretty_exceptions_enable=False,
                context_settings={"help_option_names": ["-h", "--help"]},
            )
            solo.registered_commands = [info]
            solo.callback()(_group)  # a group, so `memfit NAME ...` parses exactly as with the full app
            return typer.main.get_command(solo)
    return None


def _group() -> None:
    """memfit: how much GPU memory will this LLM job need, where does it go, will it fit?"""


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` (default: sys.argv[1:]) and return the process exit code."""
    import typer
    import typer.main

    from memfit.core.errors import MemfitError

    click_exception, usage_error = _click_errors()
    args = sys.argv[1:] if argv is None else list(argv)
    debug = os.environ.get("MEMFIT_DEBUG", "") not in ("", "0")
    try:
        command = (_only_command(args[0]) if args else None) or typer.main.get_command(app)
        _plain_coercion(command)
        with _scope(args, debug):
            result = command.main(args=args or ["--help"], prog_name="memfit", standalone_mode=False)
    except MemfitError as err:
        if debug:
            raise
        return _fail(str(err), err.exit_code)
    except typer.Exit as done:
        return int(done.exit_code)
    except typer.Abort:
        return _fail("aborted", 1)
    except click_exception as err:
        if debug:
            raise
        code = 2 if isinstance(err, usage_error) else 1
        return _fail(err.format_message(), code)  # type: ignore[attr-defined]
    except OSError as err:
        if debug:
            raise
        where = f" {err.filename}" if err.filename else ""
        return _fail(f"cannot write or read{where}: {err.strerror or err}", 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        return 0
    except Exception as err:  # a bug: still one line; MEMFIT_DEBUG=1 shows the traceback
        if debug:
            raise
        return _fail(f"{type(err).__name__}: {err} (a bug in memfit; MEMFIT_DEBUG=1 shows the traceback)", 1)
    return result if isinstance(result, int) else 0


def main() -> None:
    """The `memfit` console script."""
    sys.exit(run())
