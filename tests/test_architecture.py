"""The dependency rule (DESIGN §4) checked at runtime, and the public API's `__all__`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

import memfit

SRC = Path(memfit.__file__).parent
HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "numpy")
START_UP_FORBIDDEN = ("pydantic", "fastapi", "huggingface_hub")


def _modules_after(code: str) -> set[str]:
    """Top-level module names in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_importing_memfit_core_and_cli_leaves_heavy_stacks_out() -> None:
    """`import memfit, memfit.core, memfit.cli` loads none of torch, transformers, peft, bnb, numpy."""
    loaded = _modules_after("import memfit, memfit.core, memfit.cli")
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("args", [
    ["--help"],
    ["params", "Llama-3.1-405B"],
    ["estimate", "Llama-3.1-8B", "--task", "train", "--method", "lora", "--gpu", "H100", "--reference=all"],
    ["plan", "Llama-3.1-8B", "--gpu", "24GiB"],
])
def test_cli_runs_avoid_pydantic_fastapi_and_the_hub(args: list[str]) -> None:
    """CLI runs on catalog models import neither pydantic, fastapi, huggingface_hub nor the heavy stacks."""
    code = ("import contextlib, io\nfrom memfit.cli import run\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n    assert run({args!r}) == 0")
    loaded = _modules_after(code)
    forbidden = set(START_UP_FORBIDDEN + HEAVY)
    assert loaded.isdisjoint(forbidden), sorted(loaded & forbidden)


def _imported_modules(path: Path) -> list[tuple[int, str, int]]:
    """(line, module, relative level) for every import statement in a file, nested ones included."""
    found: list[tuple[int, str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or "", node.level))
    return found


def test_core_imports_only_the_standard_library_and_itself() -> None:
    """Every import under memfit/core/ names a stdlib module or memfit.core (relative imports stay inside)."""
    offenders = []
    for path in sorted((SRC / "core").rglob("*.py")):
        for line, module, level in _imported_modules(path):
            top = module.split(".")[0]
            inside = level > 0 or module == "memfit.core" or module.startswith("memfit.core.")
            if not (inside or top in sys.stdlib_module_names or top == "__future__"):
                offenders.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    assert offenders == []


def test_public_all_is_sorted() -> None:
    """memfit.__all__ is in sorted order."""
    assert memfit.__all__ == sorted(memfit.__all__)


def test_public_all_is_complete_and_resolvable() -> None:
    """Every public name of the memfit package is in __all__, and every name in __all__ resolves."""
    public = {
        name
        for name in dir(memfit)
        if not name.startswith("_") and not isinstance(getattr(memfit, name), types.ModuleType)
    }
    assert public == set(memfit.__all__) - {"__version__"}
    for name in memfit.__all__:
        assert getattr(memfit, name) is not None


FAMILY_NAME_ALLOWED = {"estimate.py", "result.py", "versions.py"}
"""Core modules that may name `spec.family` without testing it in a formula: estimate.py passes it to the
version notes (versions.CHANGES records transformers releases per model_type), result.py prints it."""


def _formula_files() -> list[Path]:
    return [p for p in sorted((SRC / "core").glob("*.py")) if p.name not in FAMILY_NAME_ALLOWED]


@pytest.mark.parametrize("path", _formula_files(), ids=lambda p: p.name)
def test_core_formulas_read_no_family_name_and_no_raw_config(path: Path) -> None:
    """DESIGN §5: family quirks are typed spec fields set by core/families/; a formula that tests
    `spec.family` or re-reads the config.json text (`source.config_json`) would bypass them."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    offending = [f"{path.name}:{node.lineno} .{node.attr}" for node in ast.walk(tree)
                 if isinstance(node, ast.Attribute) and node.attr in ("family", "config_json")]
    assert not offending, offending
