"""Is the installed torch / transformers / peft one the trace engine is verified on? (parent side, no torch)

The trace patches library internals and mirrors code paths (generate()'s loop, transformers' mask rules,
bitsandbytes' kernels), so a release outside `core.versions.TRACE_VERIFIED` may run without complaint and
give wrong peaks. Before a worker starts, `check_installed()` reads the installed versions from package
metadata (cheap: nothing is imported) and refuses in one line naming the verified range and the pip line,
unless MEMFIT_TRACE_UNVERIFIED=1 asks to trace anyway, in which case every estimate says its figures are
unverified. The worker then checks every patched and mirrored target (`trace/targets.py`).
"""

from __future__ import annotations

import importlib.metadata
import os

from memfit.core.errors import EngineUnavailable
from memfit.core.versions import TRACE_VERIFIED, VersionRange

UNVERIFIED_ENV = "MEMFIT_TRACE_UNVERIFIED"
"""Set to 1 to trace on library versions outside the verified range (figures are marked unverified)."""

TRACED_PACKAGES = ("torch", "transformers", "peft")
"""The packages whose code the trace runs, in the order their versions are reported."""


def installed_versions(packages: tuple[str, ...] = TRACED_PACKAGES) -> dict[str, str]:
    """{package: installed version} from package metadata; absent packages are left out."""
    found: dict[str, str] = {}
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def outside_range(versions: dict[str, str],
                  ranges: tuple[VersionRange, ...] = TRACE_VERIFIED) -> list[tuple[VersionRange, str]]:
    """The (range, installed version) pairs where the installed version is not verified."""
    out = []
    for verified in ranges:
        version = versions.get(verified.package)
        if version is None:
            continue
        try:
            inside = verified.contains(version)
        except ValueError:
            inside = False
        if not inside:
            out.append((verified, version))
    return out


def refusal(problems: list[tuple[VersionRange, str]]) -> str:
    """The one-line refusal for versions outside the verified range."""
    installed = ", ".join(f"{r.package} {v} (verified: {r.describe()})" for r, v in problems)
    pip = " ".join(f"'{r.pip_spec}'" for r, _ in problems)
    return (f"the trace engine is not verified on {installed}: pip install {pip}, or set {UNVERIFIED_ENV}=1 "
            "to trace anyway (figures marked unverified), or use engine=analytic")


def unverified_note(problems: list[tuple[VersionRange, str]]) -> str:
    """The assumption every estimate carries when the user traced outside the verified range."""
    installed = ", ".join(f"{r.package} {v}" for r, v in problems)
    verified = ", ".join(f"{r.package} {r.describe()}" for r, _ in problems)
    return (f"UNVERIFIED: traced with {installed}, outside the verified {verified} ({UNVERIFIED_ENV}=1); "
            "a changed code path in these versions may move the figures")


def unverified_allowed() -> bool:
    """Whether the user asked to trace paths memfit has not verified (MEMFIT_TRACE_UNVERIFIED=1)."""
    return os.environ.get(UNVERIFIED_ENV, "").strip().lower() in ("1", "true", "yes")


def check_installed(versions: dict[str, str] | None = None) -> list[str]:
    """Refuse (EngineUnavailable) when a traced package is outside its verified range, unless
    MEMFIT_TRACE_UNVERIFIED=1; returns the assumptions to add (empty when every version is verified)."""
    problems = outside_range(installed_versions() if versions is None else versions)
    if not problems:
        return []
    if not unverified_allowed():
        raise EngineUnavailable(refusal(problems))
    return [unverified_note(problems)]


def versions_note(versions: dict[str, str] | None = None) -> str:
    """"traced with torch 2.13.0+cpu, transformers 5.17.0, peft 0.21.2"."""
    found = installed_versions() if versions is None else versions
    return "traced with " + ", ".join(f"{p} {found[p]}" for p in TRACED_PACKAGES if p in found)
