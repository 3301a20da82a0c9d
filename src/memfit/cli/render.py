"""The only place the CLI formats numbers: rich trees and tables, every figure with its unit in its label.

"GB" is printed only for 10^9 bytes and "GiB" only for 2^30 bytes (`memfit.core.units.format_bytes`).
Every function returns rich renderables; `to_text` renders them into one string so that nothing reaches
stdout before the whole result is ready.
"""

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from memfit.core.result import Estimate, Phase, Term
from memfit.core.units import UNITS, MiB, format_bytes

MAX_CHILDREN = 10
"""Children shown under one tree node; the rest are summed into one '… n more' line."""
MAX_DEPTH = 3
"""Levels of a memory or parameter tree shown below the root."""

UNIT_CHOICES = ("GiB", "GB", "MiB", "MB")


def parse_unit(text: str) -> str:
    """The canonical spelling of a display unit ('gib' → 'GiB'); InvalidWorkload for anything else."""
    from memfit.core.errors import InvalidWorkload

    for unit in UNIT_CHOICES:
        if unit.lower() == text.strip().lower():
            return unit
    raise InvalidWorkload(f"unit={text!r} is not valid; use GiB (2^30 bytes) or GB (10^9 bytes)")


def to_text(*renderables: RenderableType, width: int | None = None) -> str:
    """Render to one string: colour only when stdout is a terminal, width from the terminal (min 100)."""
    tty = sys.stdout.isatty()
    columns = width or max(100, shutil.get_terminal_size((120, 40)).columns)
    console = Console(
        file=io.StringIO(),
        force_terminal=tty,
        color_system="auto" if tty else None,
        width=columns,
        highlight=False,
        soft_wrap=False,
    )
    for renderable in renderables:
        console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined, no-any-return]


SMALL_UNIT = {"GiB": "MiB", "GB": "MB", "MiB": "KiB", "MB": "KB", "KiB": "B", "KB": "B"}
"""The next smaller unit of the same family (binary or decimal), for figures under 0.01 of a unit."""


def size(num_bytes: int, unit: str) -> str:
    """'14.96 GiB': bytes in the display unit, the unit always written; figures under 0.01 of it use the
    next smaller unit of the same family ('3.00 MiB', never a misleading '0.00 GiB')."""
    while 0 < num_bytes < UNITS[unit] // 100 and unit in SMALL_UNIT:
        unit = SMALL_UNIT[unit]
    return format_bytes(num_bytes, unit, digits=0 if unit == "B" else 2)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


# --- params -----------------------------------------------------------------------------------------------


def params_view(report: dict[str, Any]) -> RenderableType:
    """A `memfit.params/1` report as a tree of parameter counts with each node's share of the total."""
    model, total = report["model"], report["num_params"]
    root = Tree(
        Text.assemble(
            (model["name"], "bold"),
            f" ({model['family']}): ",
            (f"{total:,} parameters", "bold"),
            f" ({total / 1e9:,.2f} billion)",
        )
    )
    nodes: dict[str, Tree] = {"": root}
    shown: dict[str, int] = {}
    for path, count in report["tree"].items():
        parent, _, name = path.rpartition("/")
        if parent not in nodes or path.count("/") >= MAX_DEPTH:
            continue
        shown[parent] = shown.get(parent, 0) + 1
        if shown[parent] > MAX_CHILDREN:
            continue
        nodes[path] = nodes[parent].add(f"{name}: {count:,} parameters ({_share(count, total)})")
    return root


# --- estimate -----------------------------------------------------------------------------------------------


def _term_label(term: Term, unit: str, whole: int) -> Text:
    label = Text.assemble(
        (term.name, "bold" if term.children else ""),
        f": {size(term.nbytes, unit)}",
        (f" ({_share(term.nbytes, whole)})", "dim"),
    )
    if term.evictable:
        label.append(" evictable", style="yellow")
    if term.note:
        label.append(f"  {term.note}", style="dim")
    return label


def _add_terms(node: Tree, terms: Sequence[Term], unit: str, whole: int, depth: int) -> None:
    ordered = sorted(terms, key=lambda t: -t.nbytes)
    for term in ordered[:MAX_CHILDREN]:
        child = node.add(_term_label(term, unit, whole))
        if depth < MAX_DEPTH and term.children:
            _add_terms(child, term.children, unit, whole, depth + 1)
    rest = ordered[MAX_CHILDREN:]
    if rest:
        node.add(Text(f"… {len(rest)} more: {size(sum(t.nbytes for t in rest), unit)}", style="dim"))


def _workload_summary(est: Estimate) -> str:
    w: Any = est.workload
    if w.__class__.__name__ == "Inference":
        text = f"inference, batch {w.batch_size} × {w.prompt_tokens} prompt + {w.new_tokens} new tokens"
        if getattr(w, "images", 0):
            text += f", {w.images} image{'s' if w.images > 1 else ''} per sequence"
    else:
        text = f"training ({w.method}), batch {w.batch_size} × {w.seq_len} tokens, {w.optimizer}"
    num_gpus = est.workload.parallel.num_gpus
    return text + (f", {num_gpus} GPUs (figures per GPU)" if num_gpus > 1 else "")


def phase_tree(est: Estimate, phase: Phase, unit: str, *, title: str) -> Tree:
    """One phase as a tree of terms: allocator terms, then fragmentation and non-torch memory."""
    header = Text.assemble(
        (title, "bold"),
        f"\npeak in {phase.name}: ",
        (f"{size(phase.allocated_bytes, unit)} allocated", "bold"),
        f" · {size(phase.reserved_bytes, unit)} reserved · {size(phase.device_bytes, unit)} on device",
    )
    if phase.at:
        header.append(f" (at {phase.at})", style="dim")
    root = Tree(header)
    _add_terms(root, phase.memory.children, unit, phase.device_bytes, 1)
    if phase.host_bytes:
        root.add(Text(f"host RAM (not on the GPU): {size(phase.host_bytes, unit)}", style="cyan"))
    return root


def phases_table(phases: Iterable[Phase], unit: str) -> Table:
    """One line per phase: allocated, reserved, on-device and host bytes, each with its unit."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in (
        "phase",
        f"allocated ({unit})",
        f"reserved ({unit})",
        f"on device ({unit})",
        f"host RAM ({unit})",
    ):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for phase in phases:
        table.add_row(
            str(phase.name),
            size(phase.allocated_bytes, unit),
            size(phase.reserved_bytes, unit),
            size(phase.device_bytes, unit),
            size(phase.host_bytes, unit) if phase.host_bytes else "-",
        )
    return table


def fit_line(est: Estimate, unit: str) -> Text | None:
    """'fits on GPU with X to spare' or 'does not fit by X', against the GPU's usable memory."""
    if est.gpu is None:
        return None
    peak, gpu = est.peak, est.gpu
    needed = peak.device_bytes - peak.evictable_bytes
    where = f"{gpu.name} ({size(gpu.usable_bytes, unit)} usable of {size(gpu.memory_bytes, unit)})"
    per_gpu = " per GPU" if est.workload.parallel.num_gpus > 1 else ""
    if est.fits:
        line = Text.assemble(
            ("fits", "bold green"),
            f" on {where}{per_gpu}: needs {size(needed, unit)}, ",
            (f"{size(gpu.usable_bytes - needed, unit)} to spare", "green"),
        )
    else:
        line = Text.assemble(
            ("does not fit", "bold red"),
            f" on {where}{per_gpu}: needs {size(needed, unit)}, ",
            (f"{size(needed - gpu.usable_bytes, unit)} short", "red"),
        )
    if peak.evictable_bytes:
        line.append(
            f"; {size(peak.evictable_bytes, unit)} of paged optimizer state can page out to host RAM",
            style="yellow",
        )
    return line


def vllm_capacity_line(est: Estimate) -> Text | None:
    """vLLM preallocates: the KV blocks it gets on this GPU, in tokens and in whole sequences of this job."""
    capacity = est.capacity
    if est.gpu is None or capacity is None:
        return None
    style = "green" if capacity.holds_batch else "red"
    return Text.assemble(
        f"vLLM KV cache capacity on {est.gpu.name}: {capacity.tokens:,} tokens = ",
        (f"{capacity.sequences:,} sequences of {capacity.sequence_tokens:,} tokens", style),
        f" (batch size {capacity.batch_size:,} asked; maximum concurrency "
        f"{float(capacity.max_concurrency):.2f}x)",
    )


def assumptions_view(assumptions: Sequence[str]) -> RenderableType | None:
    """The estimate's assumptions as a bulleted list; long ones wrap under their own text."""
    if not assumptions:
        return None
    bullets = Table.grid(padding=(0, 1))
    bullets.add_column(width=3, justify="right")
    bullets.add_column(ratio=1)
    for assumption in assumptions:
        bullets.add_row("•", assumption)
    return Group(Text("Assumptions", style="bold"), bullets)


MAX_CUTS = 5
"""Changes shown under 'what would cut the peak most'."""


def _source_figure(ref: Any) -> str:
    """A reference figure in the unit its source printed; flags a source whose 'GB' meant 2^30 bytes."""
    digits = 0 if ref.unit_bytes == 1 else 2
    text = f"{float(ref.value):,.{digits}f} {ref.unit}"
    if UNITS.get(ref.unit) != ref.unit_bytes:
        text += f" (the source's {ref.unit} = {ref.unit_bytes:,} B)"
    return text


def _titled_table(title: str) -> Table:
    """A plain, left-titled table with bold headers: the look of every secondary table here."""
    return Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)


def references_view(references: Sequence[Any], est: Estimate, unit: str) -> RenderableType | None:
    """Classic published rules of thumb beside our figure, each in its source's own unit."""
    if not references:
        return None
    table = _titled_table("Reference methods (each figure in its source's own unit)")
    for column in ("method", "figure", "source"):
        table.add_column(column)
    table.add_row("memfit (peak on device)", size(est.peak.device_bytes, unit), f"this estimate, {unit}")
    for ref in references:
        table.add_row(ref.name, _source_figure(ref), ref.source)
    return table


def cuts_view(cuts: Sequence[Any], est: Estimate, unit: str) -> RenderableType | None:
    """What would cut the training peak most: each change, the new peak allocated and what it saves."""
    if not cuts:
        return None
    engine = "" if str(est.engine) == "analytic" else " (analytic engine, against its own peak)"
    table = _titled_table(f"What would cut the peak most{engine}")
    for column in ("change", f"peak allocated ({unit})", f"saves ({unit})"):
        table.add_column(column, justify="left" if column == "change" else "right")
    for cut in cuts[:MAX_CUTS]:
        table.add_row(
            cut.description, size(cut.allocated_bytes, unit),
            size(max(cut.base_bytes - cut.allocated_bytes, 0), unit)
        )
    return table


def estimate_view(
    est: Estimate, unit: str, *, references: Sequence[Any] = (), cuts: Sequence[Any] = ()
) -> list[RenderableType]:
    """The human estimate: the peak phase as a tree, the phases one line each, fit, cuts, references,
    assumptions."""
    peak_phase = est.phase(est.peak.phase)
    title = f"{est.model.name} · {_workload_summary(est)} · {est.engine} engine"
    # the fit line follows the phases table directly; every other section is set off by a blank line
    sections: list[list[RenderableType | None]] = [
        [phase_tree(est, peak_phase, unit, title=title)],
        [phases_table(est.phases, unit), fit_line(est, unit), vllm_capacity_line(est)],
        [cuts_view(cuts, est, unit)],
        [references_view(references, est, unit)],
        [assumptions_view(est.assumptions)],
    ]
    out: list[RenderableType] = []
    for section in sections:
        shown = [part for part in section if part is not None]
        if shown:
            out.extend([Text(""), *shown] if out else shown)
    return out


# --- plan ---------------------------------------------------------------------------------------------------


def plan_view(plan: Any, unit: str) -> list[RenderableType]:
    """The planner's answer: the largest batch or context, or the least invasive changes that fit (and the
    multi-GPU strategies, when searched)."""
    out = _plan_view(plan, unit)
    if plan.strategies:
        out += [Text(""), _strategies_table(plan, unit)]
    return out


def _strategies_table(plan: Any, unit: str) -> Table:
    table = _titled_table("Multi-GPU strategies, fitting first (per GPU: the most loaded rank)")
    for column in ("GPUs", "strategy", f"per GPU ({unit})", f"host RAM per node ({unit})", "fits"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for s in plan.strategies:
        table.add_row(str(s.num_gpus), s.label, size(s.estimate.peak.device_bytes, unit),
                      size(s.host_bytes_per_node, unit) if s.host_bytes_per_node else "-",
                      Text("yes", style="green") if s.fits else Text("no", style="red"))
    return table


def _plan_view(plan: Any, unit: str) -> list[RenderableType]:
    out: list[RenderableType] = []
    base = plan.baseline
    out.append(
        Text.assemble(
            (f"{base.model.name} on {plan.gpu.name}", "bold"),
            f" ({size(plan.gpu.usable_bytes, unit)} usable): as asked, ",
            _fits_words(base),
            f", {size(base.peak.device_bytes, unit)} on device",
        )
    )
    if plan.maximize is not None:
        field = plan.maximize_field
        if plan.best is None:
            out.append(Text(f"no {field} fits: even 1 needs more than the GPU offers", style="red"))
        else:
            out.append(
                Text.assemble(
                    f"largest {field} that fits: ",
                    (f"{plan.max_value:,}", "bold green"),
                    f" ({size(plan.best.peak.device_bytes, unit)} on device; "
                    f"{plan.max_value + 1:,} does not fit)",
                )
            )
        return out
    if not plan.changes:
        out.append(Text("no single change on the list fits; try more GPUs or a smaller model", style="red"))
        return out
    out.append(Text(""))
    table = _titled_table("Least invasive changes that fit, in order")
    # a preallocating runtime (vLLM) fills the same share of the GPU whatever the change: what a change
    # buys there is KV capacity, so it gets its own column (the job as asked first, for comparison)
    kv = [c.estimate.capacity for c in plan.changes]
    columns = ["change", f"on device ({unit})", f"to spare ({unit})"]
    if any(kv):
        columns.append("KV capacity (tokens)")
        asked = base.capacity
        out.append(Text(f"KV capacity as asked: {asked.tokens:,} tokens" if asked is not None else
                        "KV capacity as asked: none"))
    for column in columns:
        table.add_column(column, justify="left" if column == "change" else "right")
    for change, capacity in zip(plan.changes, kv, strict=True):
        peak = change.estimate.peak
        spare = plan.gpu.usable_bytes - (peak.device_bytes - peak.evictable_bytes)
        row = [change.label, size(peak.device_bytes, unit), size(spare, unit)]
        if any(kv):
            row.append(f"{capacity.tokens:,}" if capacity is not None else "-")
        table.add_row(*row)
    out.append(table)
    return out


def _fits_words(est: Estimate) -> Text:
    return Text("fits", style="green") if est.fits else Text("does not fit", style="red")


# --- catalog and comparison ----------------------------------------------------------------------------


def rows_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], *, title: str) -> Table:
    """A plain table of dict rows: `columns` are (key, header) pairs; byte keys end in `_bytes`."""
    table = _titled_table(title)
    for _, header in columns:
        table.add_column(header)
    for row in rows:
        table.add_row(*(_cell(row.get(key)) for key, _ in columns))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _gpu_runs(gpu: dict[str, Any]) -> str:
    """'bf16 fp8 flash; 32 MiB': the formats a catalog GPU computes in natively (fp16 always), whether SDPA
    has its flash kernel, and the BLAS workspace per handle (MiB when whole, else bytes)."""
    runs = " ".join(name for name in ("bf16", "fp8", "fp4") if gpu[name]) or "fp16 only"
    if gpu["flash_attention"]:
        runs += " flash"
    nbytes = gpu["blas_workspace_bytes"]
    workspace = "none" if nbytes == 0 else f"{nbytes // MiB} MiB" if nbytes % MiB == 0 else f"{nbytes:,} B"
    return f"{runs}; {workspace}"


def catalog_view(report: dict[str, Any], unit: str) -> Table:
    """A `catalog_report` as a table: models, GPUs (memory in `unit`) or weight formats."""
    if "models" in report:
        rows = [
            {**m, "aliases": ", ".join(a for a in m.get("aliases", ()) if "/" not in a) or None}
            for m in report["models"]
        ]
        columns = [("name", "name"), ("repo_id", "repo id"), ("gated", "gated"), ("revision", "revision"),
                   ("aliases", "variants (same shapes)")]
        return rows_table(rows, columns, title=f"{len(rows)} catalog models (offline, no login)")
    if "gpus" in report:
        rows = [
            {
                "name": g["name"],
                "arch": f"{g['arch']} {g['compute_capability']}",
                "memory": size(g["memory_bytes"], unit),
                "usable": size(g["usable_bytes"], unit) + (" (unified)" if g.get("unified_memory") else ""),
                "runs": _gpu_runs(g),
                "aliases": ", ".join(g["aliases"]),
            }
            for g in report["gpus"]
        ]
        columns = [
            ("name", "name"),
            ("arch", "arch, capability"),
            ("memory", f"board memory ({unit})"),
            ("usable", f"usable ({unit})"),
            ("runs", "runs natively; BLAS workspace"),
            ("aliases", "aliases"),
        ]
        return rows_table(rows, columns, title=f"{len(rows)} catalog GPUs")
    rows = [
        {**q, "approx": f"{float(Fraction(q['bits_per_weight'])):.3f}", "runtimes": ", ".join(q["runtimes"])}
        for q in report["quants"]
    ]
    columns = [
        ("name", "name"),
        ("kind", "kind"),
        ("bits_per_weight", "bits per weight (exact)"),
        ("approx", "bits per weight"),
        ("runtimes", "runtimes"),
        ("note", "note"),
    ]
    return rows_table(rows, columns, title=f"{len(rows)} weight formats")


def comparison_view(report: dict[str, Any], unit: str) -> list[RenderableType]:
    """A `memfit.comparison/1` report: per engine, phase and figure, the estimate, the measurement and the
    signed error (estimate − measured) / measured."""
    measured = report["measured"]["peak"]
    out: list[RenderableType] = [
        Text.assemble(
            (f"{report['model']}", "bold"),
            f": measured peak in {measured['phase']}: ",
            (f"{size(measured['allocated_bytes'], unit)} allocated", "bold"),
            f" · {size(measured['reserved_bytes'], unit)} reserved",
            f" · {size(measured['device_bytes'], unit)} on device",
        ),
        Text(""),
    ]
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("engine", "phase", "figure", f"estimate ({unit})", f"measured ({unit})", "error"):
        table.add_column(column, justify="left" if column in ("engine", "phase", "figure") else "right")
    for engine, data in report["engines"].items():
        rows = [("peak", data["peak"])] + [(p["name"], p) for p in data["phases"]]
        for phase, figures in rows:
            for figure in ("allocated_bytes", "reserved_bytes", "device_bytes"):
                cell = figures.get(figure) or {}
                table.add_row(
                    engine,
                    phase,
                    figure.removesuffix("_bytes"),
                    _maybe_size(cell.get("estimate"), unit),
                    _maybe_size(cell.get("measured"), unit),
                    _percent(cell.get("error")),
                )
    out.append(table)
    return out


def _maybe_size(value: Any, unit: str) -> str:
    return size(value, unit) if isinstance(value, int) else "-"


def _percent(error: Any) -> str:
    return "-" if error is None else f"{100 * float(Fraction(str(error))):+.1f}%"
