"""The commands: params, estimate, plan, measure, compare, catalog, serve (DESIGN §7).

Each command builds core types from its flags (cli/options.py), calls the public API and hands the result
to cli/render.py or, with `--json`, prints the result's `to_dict()` and nothing else. Output is produced
whole, then written once: to stdout, or with `--out FILE` to a temporary file renamed over FILE (see
`_write_file`). `--fail-if-not-fit` turns "does not fit" into exit code EXIT_DOES_NOT_FIT, after the output.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from memfit.cli.options import with_workload_flags

app = typer.Typer(
    name="memfit",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from memfit._version import __version__

        sys.stdout.write(f"memfit {__version__}\n")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print memfit's version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """How much GPU memory will this LLM job need, where does it go, will it fit, and what would fit?

    Sizes: GiB = 2^30 bytes, GB = 10^9 bytes; every figure is printed with its unit.
    """


EXIT_DOES_NOT_FIT = 3
"""Exit code of `estimate` and `plan` with --fail-if-not-fit when the job does not fit (1, 2: errors)."""

_OUT = "Output"
ModelArg = Annotated[
    str,
    typer.Argument(
        help="A catalog name (Llama-3.1-8B), a Hub id (org/name) or a local "
        "config.json, model folder or .gguf file.",
        show_default=False,
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the JSON result and nothing else.", rich_help_panel=_OUT)
]
UnitOpt = Annotated[
    str, typer.Option("--unit", help="GiB (2^30 bytes, default) or GB (10^9 bytes).", rich_help_panel=_OUT)
]


def _check_out(value: Path | None) -> Path | None:
    """--out's callback: refuse a target that is not a regular file before any work is done."""
    if value is not None:
        _out_target(value)
    return value


OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Write the output to FILE (atomically, through a symlink, keeping FILE's mode) instead of "
        "stdout; FILE must be a regular file or not exist yet.",
        rich_help_panel=_OUT,
        show_default=False,
        callback=_check_out,
    ),
]
FailOpt = Annotated[
    bool,
    typer.Option(
        "--fail-if-not-fit",
        help=f"Exit with code {EXIT_DOES_NOT_FIT} when the job does not fit the --gpu (after printing the "
        "usual output), for CI gates. Needs --gpu.",
        rich_help_panel=_OUT,
    ),
]
GpuOpt = Annotated[
    str | None,
    typer.Option(
        "--gpu",
        help="A catalog GPU (H100-SXM-80GB, RTX-4090, ...; `memfit catalog gpus`) or a size such as 24GiB.",
        show_default=False,
    ),
]
NumGpusOpt = Annotated[
    int | None,
    typer.Option(
        "--num-gpus",
        help="GPUs to spread the job over; alone it follows the runtime (training: data parallel, "
        "vLLM: tensor parallel, transformers and llama.cpp: layer split); with --dp/--tp/--pp it must equal "
        "their product.",
        rich_help_panel="Parallelism",
        show_default=False,
    ),
]


def _emit(text: str, out: Path | None) -> None:
    """Write the finished output once: stdout, or FILE (see `_write_file`)."""
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    _write_file(text, out)


def _out_target(out: Path) -> tuple[Path, os.stat_result | None]:
    """The file --out really writes (symlinks resolved) and its status (None: it does not exist yet).

    Raises:
        typer.BadParameter: the target exists and is not a regular file (a device, FIFO, socket, folder or
            symlink loop).
    """
    target = Path(os.path.realpath(out.expanduser()))
    try:
        status = os.stat(target)
    except FileNotFoundError:
        return target, None
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise typer.BadParameter(f"{out} is a symlink loop; --out writes regular files only",
                                 param_hint="'--out'") from err
    if not stat.S_ISREG(status.st_mode):
        kind = _file_kind(status.st_mode)
        raise typer.BadParameter(f"{out} is {kind}; --out writes regular files only", param_hint="'--out'")
    return target, status


def _file_kind(mode: int) -> str:
    """sources' naming of a non-regular file, imported here so that CLI start-up stays short."""
    from memfit.sources._config import file_kind

    return file_kind(mode)


def _write_file(text: str, out: Path) -> None:
    """Write `text` to `out` whole or not at all: a temp file beside the real target, then os.replace.

    A symlink is written through (the file it points to is replaced, the link stays). An existing file
    keeps its permission bits (and, where allowed, its owner); a new one gets the umask's default, as with
    a plain open(). The temp file is removed on any failure.
    """
    target, status = _out_target(out)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    # a new file: 0666 less the umask (the kernel applies it); a replacement: private until given FILE's mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if status is None else 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if status is not None:
            _keep_owner_and_mode(tmp, status)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _keep_owner_and_mode(path: Path, status: os.stat_result) -> None:
    """Give the temp file the replaced file's owner (where permitted) and exact mode bits."""
    if hasattr(os, "chown") and (status.st_uid, status.st_gid) != (os.geteuid(), os.getegid()):
        # not permitted unless root: the new file is then ours, as after any editor's atomic save
        with contextlib.suppress(PermissionError):
            os.chown(path, status.st_uid, status.st_gid)
    os.chmod(path, stat.S_IMODE(status.st_mode))  # the umask does not apply; after chown, which clears setgid


def _json(data: Any) -> str:
    from memfit.api import dumps

    return dumps(data)


def _load(model: str, flags: dict[str, Any]) -> Any:
    from memfit.api import load_model
    from memfit.cli.options import model_options

    return load_model(model, **model_options(flags))


def _job(model: str, flags: dict[str, Any], num_gpus: int | None) -> tuple[Any, Any]:
    """Workload first (bad flags fail before any model is read), then the model."""
    from memfit.cli.options import workload_from_flags

    workload = workload_from_flags(flags, num_gpus=num_gpus)
    return _load(model, flags), workload


@app.command()
def params(
    model: ModelArg,
    as_json: JsonOpt = False,
    out: OutOpt = None,
    revision: Annotated[str | None, typer.Option(help="Hub revision.", show_default=False)] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the network.")] = False,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Allow a Hub repo's own code.")
    ] = False,
) -> None:
    """Count a model's parameters exactly, per component."""
    from memfit.api import params_report

    flags = {"revision": revision, "offline": offline, "trust_remote_code": trust_remote_code}
    report = params_report(_load(model, flags))
    if as_json:
        _emit(_json(report), out)
        return
    from memfit.cli import render

    _emit(render.to_text(render.params_view(report)), out)


@app.command()
@with_workload_flags
def estimate(
    model: ModelArg,
    flags: dict[str, Any],
    engine: Annotated[
        str,
        typer.Option(
            help="analytic (formulas, milliseconds) or trace (real HF code on fake tensors; "
            "needs memfit\\[trace])."
        ),
    ] = "analytic",
    gpu: GpuOpt = None,
    num_gpus: NumGpusOpt = None,
    unit: UnitOpt = "GiB",
    as_json: JsonOpt = False,
    reference: Annotated[
        str | None,
        typer.Option(
            help="Show classic reference methods beside ours: all, or names separated by commas.",
            rich_help_panel=_OUT,
            show_default=False,
        ),
    ] = None,
    out: OutOpt = None,
    fail_if_not_fit: FailOpt = False,
) -> None:
    """Estimate the GPU memory of a job, per phase, as a tree of named terms.

    Exit codes: 0 done (also "does not fit"), 2 bad input, 1 any other error,
    3 with --fail-if-not-fit when the job does not fit the --gpu.
    """
    from memfit import api
    from memfit.cli import render

    display_unit = render.parse_unit(unit)
    _check_gate(fail_if_not_fit, gpu)
    spec, workload = _job(model, flags, num_gpus)
    est = api.estimate(spec, workload, gpu=gpu, engine=engine)
    if as_json:
        _emit(_json(est.to_dict()), out)
    else:
        references = _references(spec, workload, reference) if reference else ()
        from memfit.core.workload import Training

        cuts = _cuts(spec, workload, gpu) if isinstance(workload, Training) else ()
        _emit(render.to_text(*render.estimate_view(est, display_unit, references=references, cuts=cuts)), out)
    _gate(fail_if_not_fit, fits=est.fits)


def _check_gate(fail_if_not_fit: bool, gpu: str | None) -> None:
    """--fail-if-not-fit asks whether the job fits a GPU, so it needs one."""
    if fail_if_not_fit and gpu is None:
        from memfit.core.errors import InvalidWorkload

        raise InvalidWorkload(
            "--fail-if-not-fit needs --gpu: name the GPU the job must fit (a catalog GPU or a size such as "
            "24GiB)"
        )


def _gate(fail_if_not_fit: bool, *, fits: bool | None) -> None:
    """After the output: exit EXIT_DOES_NOT_FIT when asked to and the job does not fit."""
    if fail_if_not_fit and fits is False:
        raise typer.Exit(EXIT_DOES_NOT_FIT)


def _references(spec: Any, workload: Any, names: str) -> Any:
    from memfit.core.reference import reference_estimates

    return reference_estimates(spec, workload, tuple(n.strip() for n in names.split(",") if n.strip()))


def _cuts(spec: Any, workload: Any, gpu: str | None) -> Any:
    """The planner's single changes that lower the peak, by the analytic engine (a trace per change would
    take minutes): the table compares analytic with analytic, whatever engine made the estimate."""
    from memfit import api
    from memfit.core.plan import cut_suggestions

    return cut_suggestions(spec, workload, estimator=lambda s, w, _g: api.estimate(s, w, engine="analytic"))


@app.command()
@with_workload_flags
def plan(
    model: ModelArg,
    flags: dict[str, Any],
    gpu: Annotated[
        str, typer.Option("--gpu", help="A catalog GPU or a size such as 24GiB.", show_default=False)
    ],
    maximize: Annotated[
        str | None,
        typer.Option(
            help="batch: the largest batch size that fits; context: the longest prompt or sequence "
            "that fits; n-gpu-layers: llama.cpp's largest --n-gpu-layers that fits. "
            "Without it: the least invasive changes that make the job fit.",
            show_default=False,
        ),
    ] = None,
    num_gpus: NumGpusOpt = None,
    gpu_counts: Annotated[
        str | None,
        typer.Option(
            help="Training: also search multi-GPU strategies (DDP, ZeRO, offload, FSDP, TP × FSDP, "
            "PP × FSDP) over these GPU counts, e.g. 8,16; per-GPU and per-node figures.",
            show_default=False,
        ),
    ] = None,
    emit: Annotated[
        str | None,
        typer.Option(
            help="Also print the launch line that realises the plan: vllm (vllm serve …), llama.cpp "
            "(llama-server …) or transformers (from_pretrained / TrainingArguments); it must name the "
            "job's --runtime.",
            show_default=False,
        ),
    ] = None,
    unit: UnitOpt = "GiB",
    as_json: JsonOpt = False,
    out: OutOpt = None,
    fail_if_not_fit: Annotated[
        bool,
        typer.Option(
            "--fail-if-not-fit",
            help=f"Exit with code {EXIT_DOES_NOT_FIT} when the job as asked does not fit the --gpu (after "
            "printing the plan), for CI gates.",
            rich_help_panel=_OUT,
        ),
    ] = False,
) -> None:
    """What fits a GPU: the largest batch, context or llama.cpp layer count, or the least invasive changes
    that fit; --emit prints the launch line.

    Exit codes: 0 done (also "does not fit"), 2 bad input, 1 any other error,
    3 with --fail-if-not-fit when the job as asked does not fit the --gpu.
    """
    from memfit import api
    from memfit.cli import render

    display_unit = render.parse_unit(unit)
    wanted = _maximize(maximize)
    spec, workload = _job(model, flags, num_gpus)
    _check_emit(emit, workload)
    result = api.plan(spec, workload, gpu=gpu, maximize=wanted, gpu_counts=_gpu_counts(gpu_counts))
    chosen = result.chosen if emit else None
    launch = api.launch_command(spec, chosen.workload) if chosen is not None else None
    if as_json:
        data = result.to_dict()
        if emit:
            data["launch"] = {"runtime": str(workload.runtime), "command": launch}
        _emit(_json(data), out)
    else:
        text = render.to_text(*render.plan_view(result, display_unit))
        if emit:
            text += ("\nLaunch line for that plan:\n" + launch + "\n" if launch is not None
                     else "\nNo launch line: nothing the planner tried fits.\n")
        _emit(text, out)
    _gate(fail_if_not_fit, fits=result.baseline.fits)


def _check_emit(emit: str | None, workload: Any) -> None:
    """--emit names the job's own runtime (training launches through transformers)."""
    if emit is None:
        return
    from memfit.core.choices import Runtime
    from memfit.core.errors import InvalidWorkload

    wanted = Runtime.parse(emit.strip().lower(), field="emit")
    if wanted is not workload.runtime:
        raise InvalidWorkload(f"--emit {wanted} needs --runtime {wanted} (the plan is for "
                              f"runtime={workload.runtime}); add --runtime {wanted}")


def _gpu_counts(text: str | None) -> tuple[int, ...]:
    """--gpu-counts "8,16" → (8, 16); each a whole number of GPUs within memfit's limit."""
    if not text:
        return ()
    from memfit.core.errors import InvalidWorkload
    from memfit.core.workload import MAX_GPUS

    counts = []
    for part in text.split(",")[:16]:
        if not part.strip().isdigit() or not 1 <= int(part) <= MAX_GPUS:
            raise InvalidWorkload(f"--gpu-counts {text!r}: each count must be a whole number in "
                                  f"1..{MAX_GPUS}")
        counts.append(int(part))
    return tuple(counts)


def _maximize(text: str | None) -> str | None:
    if text is None:
        return None
    from memfit.core.errors import InvalidWorkload

    wanted = text.strip().lower().replace("_", "-")
    if wanted not in ("batch", "context", "n-gpu-layers"):
        raise InvalidWorkload(f"maximize={text!r} is not valid; use batch, context or n-gpu-layers")
    return wanted


@app.command()
@with_workload_flags
def measure(
    model: ModelArg,
    flags: dict[str, Any],
    gpu: GpuOpt = None,
    unit: UnitOpt = "GiB",
    as_json: JsonOpt = False,
    out: OutOpt = None,
) -> None:
    """Run the job on this machine's CUDA GPU with random weights and report measured memory per phase."""
    from memfit import api
    from memfit.cli import render

    display_unit = render.parse_unit(unit)
    spec, workload = _job(model, flags, None)
    est = api.estimate(spec, workload, gpu=gpu, engine="measure")
    if as_json:
        _emit(_json(est.to_dict()), out)
        return
    _emit(render.to_text(*render.estimate_view(est, display_unit)), out)


@app.command()
@with_workload_flags
def compare(
    model: ModelArg,
    flags: dict[str, Any],
    gpu: GpuOpt = None,
    unit: UnitOpt = "GiB",
    as_json: JsonOpt = False,
    out: OutOpt = None,
) -> None:
    """Estimate with each engine and measure the same job on this GPU: the error per phase and figure."""
    from memfit import api
    from memfit.cli import render

    display_unit = render.parse_unit(unit)
    spec, workload = _job(model, flags, None)
    result = api.compare(spec, workload, gpu=gpu)
    report = result if isinstance(result, dict) else result.to_dict()
    if as_json:
        _emit(_json(report), out)
        return
    _emit(render.to_text(*render.comparison_view(report, display_unit)), out)


@app.command()
def catalog(
    what: Annotated[str, typer.Argument(help="models, gpus or quants.", show_default=False)],
    as_json: JsonOpt = False,
    unit: UnitOpt = "GiB",
) -> None:
    """List the bundled catalog: models, GPUs or weight formats (offline)."""
    from memfit import api
    from memfit.cli import render

    display_unit = render.parse_unit(unit)
    report = api.catalog_report(what)
    if as_json:
        _emit(_json(report), None)
        return
    _emit(render.to_text(render.catalog_view(report, display_unit)), None)


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to bind; keep 127.0.0.1 unless you mean to share it.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    allow_trace: Annotated[
        bool,
        typer.Option("--allow-trace", help="Allow the trace engine (seconds and ~0.4 GiB RAM per request)."),
    ] = False,
) -> None:
    """Serve the local web page and its JSON API (needs memfit\\[web])."""
    import importlib

    from memfit.core.errors import MissingExtra

    try:
        import uvicorn

        # imported by name: cli and web are sibling layers that never import each other statically
        web = importlib.import_module("memfit.web.app")
    except ImportError as err:
        raise MissingExtra("memfit serve needs fastapi and uvicorn: pip install 'memfit[web]'") from err
    sys.stderr.write(f"memfit: serving on http://{host}:{port} (Ctrl-C stops)\n")
    uvicorn.run(web.create_app(allow_trace=allow_trace), host=host, port=port, log_level="warning")
