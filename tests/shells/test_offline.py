"""`--offline` and HF_HUB_OFFLINE=1 make no network call of any kind; an unreachable Hub fails fast.

Every test here runs with the network blocked: socket.getaddrinfo, socket.create_connection and
socket.socket.connect raise and record each attempt (in-process by monkeypatch, in a child process by a
sitecustomize module on PYTHONPATH). Nothing here reaches the network.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
from huggingface_hub import constants
from tests.shells.test_cli import assert_one_error_line, invoke

import memfit
from memfit.core.errors import EngineUnavailable, ModelNotFound
from memfit.sources import hub

UNCACHED = "memfit-test/uncached-model"
OFFLINE_MESSAGE = "not in the local Hugging Face cache and offline mode is on"


class NetworkAttempted(OSError):
    """What a blocked socket call raises."""


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Block and record every address lookup and connection; an empty, private Hugging Face cache.

    huggingface_hub keeps its agent registry (fetched from the Hub for the user-agent header) in a
    process-wide variable and a file under HF_HOME: both are emptied so that a fetch would really be tried.
    """
    recorded: list[str] = []

    def blocked(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            recorded.append(f"{name}{args[:2]!r}")
            raise NetworkAttempted(f"network blocked in tests: {name}")

        return call

    monkeypatch.setattr(socket, "getaddrinfo", blocked("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", blocked("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", blocked("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", blocked("connect_ex"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent_harnesses.json"))
    monkeypatch.setattr("huggingface_hub.utils._detect_agent._registry", None, raising=False)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", False)
    return recorded


def test_blocking_fixture_sees_the_agent_registry_fetch(attempts: list[str]) -> None:
    """Sanity check of the fixture: an online huggingface_hub header build tries the network, and is seen."""
    from huggingface_hub.utils import build_hf_headers

    build_hf_headers()
    assert attempts, "the agent-registry fetch was not attempted: the offline tests below would prove nothing"


@pytest.mark.parametrize("command", ["estimate", "params"])
def test_cli_offline_makes_no_network_call(attempts: list[str], command: str) -> None:
    """`memfit estimate|params org/uncached --offline`: one ModelNotFound line, exit 2, zero lookups."""
    started = time.monotonic()
    outcome = invoke(command, UNCACHED, "--offline")
    elapsed = time.monotonic() - started
    assert_one_error_line(outcome, 2, mentions=OFFLINE_MESSAGE)
    assert attempts == []
    assert elapsed < 5  # a cache miss, not a wait on the network


def test_cli_hf_hub_offline_environment_makes_no_network_call(attempts: list[str]) -> None:
    """HF_HUB_OFFLINE=1 without the flag: the same single line and no lookup."""
    outcome = invoke("estimate", UNCACHED, env={"HF_HUB_OFFLINE": "1"})
    assert_one_error_line(outcome, 2, mentions=OFFLINE_MESSAGE)
    assert attempts == []


def test_cli_offline_puts_the_process_back(attempts: list[str]) -> None:
    """After an in-process `--offline` run the environment and huggingface_hub's constants are as before."""
    invoke("estimate", UNCACHED, "--offline")
    assert "HF_HUB_OFFLINE" not in os.environ
    assert "HF_HUB_DISABLE_TELEMETRY" not in os.environ
    assert (constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_TELEMETRY) == (False, False)


@pytest.mark.parametrize(
    "ref",
    ["meta-llama/Llama-2-70b-chat-hf", "Llama-3.2-3B-Instruct", "codellama/CodeLlama-34b-hf", "octocoder"],
)
def test_catalog_variants_and_added_models_resolve_without_the_network(attempts: list[str], ref: str) -> None:
    """Variants and models the issue could not estimate resolve from the catalog, online mode, no lookup."""
    outcome = invoke("estimate", ref, "--json")
    assert outcome.exit_code == 0, outcome.stderr
    assert attempts == []


def test_not_a_causal_lm_hub_id_is_refused_without_the_network(attempts: list[str]) -> None:
    """A well-known encoder-decoder's Hub id gets its one line, exit 2, without asking the Hub."""
    assert_one_error_line(invoke("estimate", "google-t5/t5-base"), 2, mentions="is an encoder-decoder model")
    assert attempts == []


def test_api_offline_makes_no_network_call(attempts: list[str]) -> None:
    """`memfit.load_model(id, offline=True)`: ModelNotFound in one line, zero lookups, state put back."""
    with pytest.raises(ModelNotFound, match=OFFLINE_MESSAGE) as info:
        memfit.load_model(UNCACHED, offline=True)
    assert "\n" not in str(info.value)
    assert attempts == []
    assert constants.HF_HUB_OFFLINE is False
    assert "HF_HUB_OFFLINE" not in os.environ


def test_offline_hub_sets_environment_and_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside offline_hub() both the environment (for a first import, and children) and the imported
    constants say offline; both are restored, nested use included."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", False)
    with hub.offline_hub():
        with hub.offline_hub():
            assert constants.HF_HUB_OFFLINE is True
        assert (os.environ["HF_HUB_OFFLINE"], os.environ["HF_HUB_DISABLE_TELEMETRY"]) == ("1", "1")
        assert constants.is_offline_mode() is True
        assert constants.HF_HUB_DISABLE_TELEMETRY is True
    assert "HF_HUB_OFFLINE" not in os.environ
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "0"
    assert (constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_TELEMETRY) == (False, False)


def test_cached_lookup_runs_offline_and_the_download_online(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Not offline: the cache lookup runs in huggingface_hub's offline mode (no user-agent fetch), the
    download does not."""
    seen: list[tuple[bool, bool]] = []

    def fake_download(repo_id: str, filename: str, *, revision: Any = None, local_files_only: bool = False,
                      token: Any = None) -> str:
        seen.append((local_files_only, constants.HF_HUB_OFFLINE))
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        raise huggingface_hub.errors.HFValidationError("refused")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(ModelNotFound, match="not a valid Hub repo id"):
        hub.download_config(UNCACHED, revision=None, offline=False)
    assert seen == [(True, True), (False, False)]


@pytest.fixture
def hanging_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """huggingface_hub's download hangs (as during its retries with no network) until the test ends."""
    release = threading.Event()

    def fake_download(repo_id: str, filename: str, *, revision: Any = None, local_files_only: bool = False,
                      token: Any = None) -> str:
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        release.wait(30)
        raise huggingface_hub.errors.LocalEntryNotFoundError("connection error")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv("MEMFIT_HUB_TIMEOUT", "0.2")
    yield release
    release.set()


def test_unanswered_hub_fails_at_the_deadline(hanging_hub: threading.Event) -> None:
    """A Hub that does not answer gives EngineUnavailable in one line after MEMFIT_HUB_TIMEOUT (0.2 s)."""
    started = time.monotonic()
    match = r"did not answer within 0\.2 s for memfit-test/uncached"
    with pytest.raises(EngineUnavailable, match=match) as info:
        memfit.load_model(UNCACHED)
    assert time.monotonic() - started < 3
    assert "\n" not in str(info.value)


def test_cli_unanswered_hub_is_one_line_exit_1(hanging_hub: threading.Event) -> None:
    """The CLI maps it to one `error:` line and exit 1 (a network failure, not bad input)."""
    assert_one_error_line(invoke("estimate", UNCACHED), 1, mentions="did not answer within 0.2 s")


@pytest.mark.parametrize(
    ("value", "seconds"), [("", 5.0), ("1.5", 1.5), ("soon", 5.0), ("0", 5.0), ("-2", 5.0)]
)
def test_hub_timeout_reads_memfit_hub_timeout(
    monkeypatch: pytest.MonkeyPatch, value: str, seconds: float
) -> None:
    """MEMFIT_HUB_TIMEOUT overrides HUB_TIMEOUT_S (5 s) when it is a positive number."""
    monkeypatch.setenv("MEMFIT_HUB_TIMEOUT", value)
    assert hub.HUB_TIMEOUT_S == 5.0
    assert hub.hub_timeout_s() == seconds


SITECUSTOMIZE = textwrap.dedent(
    '''
    """Test harness: block and record every network attempt of this process (never reaches the network)."""
    import os
    import socket

    _LOG = os.environ["MEMFIT_TEST_NETLOG"]
    with open(_LOG, "a", encoding="utf-8") as _fh:
        _fh.write("loaded\\n")


    def _blocked(name):
        def call(*args, **kwargs):
            with open(_LOG, "a", encoding="utf-8") as fh:
                fh.write(f"attempt {name} {args[:2]!r}\\n")
            raise OSError(f"network blocked in tests: {name}")

        return call


    socket.getaddrinfo = _blocked("getaddrinfo")
    socket.create_connection = _blocked("create_connection")
    socket.socket.connect = _blocked("connect")
    socket.socket.connect_ex = _blocked("connect_ex")
    '''
)


def run_blocked(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[Any, list[str], float]:
    """`python -m memfit ARGS` in a child whose sockets are blocked; (result, log lines, seconds)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "net.log"
    log.unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("HF_", "TRANSFORMERS_", "MEMFIT_")) and k != "PYTHONPATH"}
    src = str(Path(memfit.__file__).resolve().parent.parent)
    child_env = {**base, "PYTHONPATH": os.pathsep.join([str(site), src]), "HF_HOME": str(tmp_path / "hf"),
                 "MEMFIT_TEST_NETLOG": str(log), **(env or {})}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "memfit", *args], env=child_env, capture_output=True,
                          text=True, timeout=120, check=False)
    elapsed = time.monotonic() - started
    return done, log.read_text().splitlines() if log.exists() else [], elapsed


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("estimate", UNCACHED, "--offline"), {}),
        (("params", UNCACHED, "--offline"), {}),
        (("estimate", UNCACHED), {"HF_HUB_OFFLINE": "1"}),
    ],
    ids=["estimate --offline", "params --offline", "HF_HUB_OFFLINE=1"],
)
def test_fresh_process_offline_makes_no_network_attempt(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    """In a fresh process (huggingface_hub imported for the first time, empty HF_HOME) offline mode tries
    no lookup and no connection: one ModelNotFound line, exit 2."""
    done, log, _ = run_blocked(tmp_path, *args, env=env)
    assert log == ["loaded"]  # the blocker was active, and nothing was attempted
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: {UNCACHED} is {OFFLINE_MESSAGE.split(' and ')[0]}")


def test_fresh_process_without_network_fails_within_the_deadline(tmp_path: Path) -> None:
    """Not offline and no network: the attempts are made (and blocked), and instead of huggingface_hub's
    ~25 s of retries the command stops at MEMFIT_HUB_TIMEOUT (1 s) with one line, exit 1."""
    done, log, elapsed = run_blocked(tmp_path, "estimate", UNCACHED, env={"MEMFIT_HUB_TIMEOUT": "1"})
    assert log[0] == "loaded"
    assert any(line.startswith("attempt ") for line in log[1:])
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: the Hugging Face Hub did not answer within 1 s for {UNCACHED}")
    assert elapsed < 15  # 1 s deadline + start-up; the retries alone would take over 20 s
