"""Session fixtures: isolated Prefect settings, one Prefect server, a signing key,
the example's real packages, and a loopback HTTP server for repositories."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports prefect: every Prefect file of the session (home,
# results, cache records) lives in a fresh folder, so nothing leaks between
# sessions or into the developer's ~/.prefect.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="dropship-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(_SESSION_HOME / "prefect" / "results")
os.environ.pop("PREFECT_API_URL", None)
os.environ["DROPSHIP_HOME"] = str(_SESSION_HOME / "dropship")

import functools  # noqa: E402
import http.server  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from dropship.signing import generate_key  # noqa: E402

# Container droplets: a session dockerd, the stock image, container emulators.
pytest_plugins = ["tests.droplets", "tests.registry"]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hello"


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """One real Prefect server (SQLite) for the whole session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def signing_key() -> str:
    return generate_key("dropship tests", "tests@example.invalid")


@pytest.fixture(scope="session")
def other_key() -> str:
    return generate_key("someone else", "else@example.invalid")


def build_example(version: str, out: Path, epoch: int = 1700000000) -> dict[str, Path]:
    """Build the example's four real packages for `version` into `out`."""
    work = out / f"src-{version}-{epoch}"
    shutil.copytree(EXAMPLE, work)
    built: dict[str, Path] = {}
    for fmt in ("deb", "rpm"):
        for arch in ("amd64", "arm64"):
            subprocess.run(
                ["sh", "packaging/build.sh", fmt, arch],
                cwd=work,
                check=True,
                capture_output=True,
                env={**os.environ, "DROPSHIP_VERSION": version, "SOURCE_DATE_EPOCH": str(epoch)},
            )
            (package,) = (work / "out").glob(f"*.{fmt}")
            target = out / package.name
            shutil.move(package, target)
            built[f"{arch}-{fmt}"] = target
    shutil.rmtree(work)
    return built


@pytest.fixture(scope="session")
def example_packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """{version: {"amd64-deb": path, ...}} for 0.1.0, 0.2.0 and 0.3.0."""
    out = tmp_path_factory.mktemp("packages")
    return {v: build_example(v, out) for v in ("0.1.0", "0.2.0", "0.3.0")}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[Path], str]]:
    """serve(folder) -> base URL of a 127.0.0.1 HTTP server for that folder."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# Fault and scale tests print measured figures as lines starting with "FIGURE";
# the summary repeats them so that every run (CI's too) reports them without -s.
_FIGURES: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _FIGURES.extend(line.strip() for line in report.capstdout.splitlines() if line.strip().startswith("FIGURE"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
