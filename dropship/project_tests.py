"""Running the project's test command on the orchestrator, before any machine."""

from __future__ import annotations

import tempfile
from pathlib import Path

from dropship.builder import unpack
from dropship.errors import CommandError, TestsFailed
from dropship.process import run


def run_tests(archive: Path, command: list[str], *, version: str, source_date_epoch: int, timeout: float = 1800) -> str:
    """Unpack the release's source and run `command` in it; `TestsFailed` on failure."""
    with tempfile.TemporaryDirectory(prefix="dropship-test-") as tmp:
        source = Path(tmp) / "src"
        unpack(archive, source)
        try:
            return run(
                command,
                cwd=source,
                env={"DROPSHIP_VERSION": version, "SOURCE_DATE_EPOCH": str(source_date_epoch)},
                what="test command",
                timeout=timeout,
            )
        except CommandError as exc:
            raise TestsFailed(exc.argv, exc.returncode, exc.output, "test command") from exc
