#!/usr/bin/env bash
# The cross-check tests and the trace check under the newest transformers and peft pip serves, on demand:
# moving memfit's supported range is a deliberate step with a result file, never a surprise in CI.
#
#   bash benchmarks/newest.sh [VENV]        # default VENV: .venv-newest (made fresh each run)
#
# It installs memfit with torch from constraints.txt and everything else unpinned, upgrades transformers
# and peft past the extras' upper bound, runs tests/crosscheck, the trace-engine unit tests and
# benchmarks/trace_check.py with MEMFIT_TRACE_UNVERIFIED=1 (a version being verified is outside the range by
# definition), and writes benchmarks/results/newest-<date>-transformers<version>.md. For the catalog sweep
# under both versions, run benchmarks/versions.py run in each environment, then versions.py compare.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-newest}"
rm -rf "$venv"
python3 -m venv "$venv"
. "$venv/bin/activate"
torch_pin="$(mktemp)"
grep '^torch==' constraints.txt > "$torch_pin"
pip install -q -c "$torch_pin" -e '.[trace,gguf,web,test]'
# pip reports that the upgrade leaves memfit's verified range (the point of this run) and still succeeds
pip_log="$(mktemp)"
pip install -q -c "$torch_pin" --upgrade transformers peft > "$pip_log" 2>&1 || { cat "$pip_log"; exit 1; }
export MEMFIT_TRACE_UNVERIFIED=1
versions="$(python -c 'import importlib.metadata as m; print(", ".join(f"{p} {m.version(p)}" for p in ("torch", "transformers", "peft", "huggingface_hub")))')"
tf="$(python -c 'import importlib.metadata as m; print(m.version("transformers"))')"
out="benchmarks/results/newest-$(date -u +%F)-transformers${tf}.md"
tests_log="$(mktemp)"
status=0
python -m pytest -q -p no:cacheprovider tests/crosscheck tests/unit/test_trace_harness.py \
    tests/unit/test_trace_patches.py tests/unit/test_trace_standins.py tests/unit/test_trace_compat.py \
    > "$tests_log" 2>&1 || status=$?
check="$(python benchmarks/trace_check.py --out "$(mktemp -d)" 2>/dev/null)" || status=$?
{
    echo "# memfit under the newest releases ($(date -u +%F))"
    echo
    echo "$versions; memfit $(git rev-parse --short HEAD); pinned set: constraints.txt"
    echo
    echo "## Cross-check and trace tests (pytest exit code $status)"
    echo
    echo '```'
    grep -E "passed|failed|^FAILED|^ERROR" "$tests_log" | tail -40
    echo '```'
    echo
    echo "## Trace vs the H100 ground truth (measured with transformers 5.17.0)"
    echo
    echo "$check"
} > "$out"
echo "wrote $out"
exit "$status"
