"""Library versions as data: what the analytic formulas follow, where the trace is verified, what changed.

Memory follows code paths, and code paths move between releases (transformers 5.21 stopped running Gemma-2
with SDPA; 5.24 renamed the cache argument). So every figure names the versions it models:
- `MODELED`: the versions the analytic engine's formulas follow: those of the H100 ground truth
  (../shared/groundtruth/README.md) and of the trace calibration sweep they were fitted to.
- `TRACE_VERIFIED`: the ranges the trace engine has been checked on against the ground truth and a catalog
  sweep (benchmarks/results/trace-check-*, versions-*). Outside them the trace refuses, or runs with an
  "unverified" assumption when the user asks for that.
- `CHANGES`: behaviour changes after the modeled versions that move memory, per family, so an analytic
  estimate can say where a newer library differs from what it models.

Versions are compared as release tuples (`5.25.0+cpu` → (5, 25, 0)); pre-release and local tags are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

MODELED: dict[str, str] = {
    "transformers": "5.17.0",
    "peft": "0.21.0",
    "bitsandbytes": "0.50.2",
    "torch": "2.11.0",
}
"""Library versions the analytic engine's transformers-runtime formulas follow. Source: the ground truth's
`versions` (torch 2.11.0+cu130, transformers 5.17.0, peft 0.21.0, bitsandbytes 0.50.2) and the calibration
sweep (results/calibration-2026-11-23: transformers 5.17.0)."""


def parse_version(text: str) -> tuple[int, ...]:
    """The release tuple of a version string: "5.25.0" → (5, 25, 0), "2.13.0+cpu" → (2, 13, 0),
    "5.26.0.dev0" → (5, 26, 0). Raises ValueError when it has no leading number."""
    release = text.strip().split("+", 1)[0]
    parts: list[int] = []
    for piece in release.split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):      # "0rc1", "0dev": the release stops here
            break
    if not parts:
        raise ValueError(f"not a version: {text!r}")
    return tuple(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionRange:
    """Versions from `low` (inclusive) up to `below` (exclusive) of one package."""

    package: str
    low: str
    below: str

    def contains(self, version: str) -> bool:
        """Whether `version` lies in the range (release tuples; local tags such as +cpu ignored)."""
        return parse_version(self.low) <= parse_version(version) < parse_version(self.below)

    @property
    def pip_spec(self) -> str:
        """The requirement that installs a version in range: "transformers>=5.17.0,<5.26"."""
        return f"{self.package}>={self.low},<{self.below}"

    def describe(self) -> str:
        """"5.17.0 up to (not including) 5.26"."""
        return f"{self.low} up to (not including) {self.below}"


TRACE_VERIFIED: tuple[VersionRange, ...] = (
    VersionRange(package="torch", low="2.13.0", below="2.14"),
    VersionRange(package="transformers", low="5.17.0", below="5.26"),
    VersionRange(package="peft", low="0.21.0", below="0.22"),
)
"""Where the trace engine is verified: torch 2.13 (CPU build, the fake-CUDA shim), transformers 5.17.0 and
5.25.0 (trace check against the H100 ground truth and a catalog sweep under each; the crosscheck tests under
both), peft 0.21.0-0.21.2. Source: benchmarks/results/versions-2026-12-04.md."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Attention:
    """The attention a workload runs as memfit models it: `runs` ("sdpa", "eager", "flash"), and whether the
    workload left the choice to transformers' default (attn=sdpa) rather than naming one."""

    runs: str
    default: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class BehaviourChange:
    """A release of `package` from `since` on that changes the memory of `families`' models (empty: all).

    Two kinds of attention change narrow where it applies: `default_attention` (transformers' default becomes
    that attention: it matters only where the workload leaves the choice to the default and memfit models
    another) and `attention` (that attention's own code changed: it matters only where it runs).
    """

    package: str
    since: str
    families: frozenset[str]
    what: str
    instead: str = ""
    default_attention: str = ""
    attention: str = ""

    def applies(self, family: str, version: str | None = None, *, attention: Attention | None = None) -> bool:
        """Whether this change touches `family` running `attention` (None: not known, any), and, given a
        version, whether that version has it."""
        if self.families and family not in self.families:
            return False
        if attention is not None:
            if self.default_attention and (not attention.default or attention.runs == self.default_attention):
                return False
            if self.attention and attention.runs != self.attention:
                return False
        return version is None or parse_version(version) >= parse_version(self.since)


CHANGES: tuple[BehaviourChange, ...] = (
    BehaviourChange(
        package="transformers", since="5.21.0", families=frozenset({"gemma2"}), default_attention="eager",
        what="Gemma-2 refuses SDPA (attention logit softcapping: `_supports_sdpa = False`), so its default "
             "attention is eager, which keeps (batch, heads, seq, seq) scores",
        instead="attn=eager estimates what it runs"),
    BehaviourChange(
        package="transformers", since="5.24.0", families=frozenset({"gptj"}), default_attention="sdpa",
        what="GPT-J runs SDPA by default (its attention moved to the shared attention interface), where "
             "earlier releases ran eager with fp32 scores",
        instead="no attn setting reproduces it here: the analytic engine models the eager path"),
    BehaviourChange(
        package="transformers", since="5.25.0", families=frozenset({"falcon"}), attention="eager",
        what="Falcon's eager attention runs the shared eager_attention_forward (scores, fp32 softmax, cast "
             "back) instead of its own fp32 upcast of the scores plus the ALiBi bias, and no longer keeps "
             "the previous layer's probabilities: falcon-rw-1b eager prefill b1 s1024 -7.4 % (trace)"),
)
"""Memory-relevant changes after `MODELED`, each found by a test or sweep under the newer release and located
in the release wheels:
- gemma2 (5.21.0): tests/crosscheck/test_trace_targets.py (default attention of one catalog model per
  family); models/gemma2/modeling_gemma2.py `_supports_sdpa = False  # sdpa does not support softcapping`
  (5.17.0-5.20.0: True).
- gptj (5.24.0): the same test; models/gptj/modeling_gptj.py `_supports_sdpa = True` (5.17.0-5.23.0:
  GPTJ_ATTENTION_CLASSES, eager and flash-attention-2 only).
- falcon eager (5.25.0): benchmarks/results/versions-2026-12-04.md (the catalog sweep traced under 5.17.0
  and 5.25.0); models/falcon/modeling_falcon.py `eager_attention_forward` (absent up to 5.24.0).
Not listed, as they move no memory: 5.24.0 renamed the cache argument `past_key_values` to `cache` (the
trace follows the installed name, trace/targets.py); 5.23.0 stopped OPT building an all-ones 2-D mask
(which a GPU skips either way: fast_all)."""


def later_changes(package: str, family: str, *,
                  attention: Attention | None = None) -> tuple[BehaviourChange, ...]:
    """The changes after the modeled version of `package` that touch `family` (BehaviourChange.applies)."""
    return tuple(c for c in CHANGES if c.package == package and c.applies(family, attention=attention))


def modeled_note(family: str, *, attention: Attention | None = None) -> tuple[str, ...]:
    """The analytic engine's version assumptions for a transformers-runtime estimate of `family` running
    `attention` (None: not known)."""
    notes = ["follows transformers {transformers}, peft {peft}, bitsandbytes {bitsandbytes} and torch "
             "{torch} (the versions its formulas were calibrated on)".format(**MODELED)]
    for change in later_changes("transformers", family, attention=attention):
        tail = f"; {change.instead}" if change.instead else ""
        notes.append(f"transformers {change.since} and later differ here: {change.what}; these figures "
                     f"follow {MODELED['transformers']}{tail}")
    return tuple(notes)
