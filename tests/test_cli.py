from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dropship.cli import main


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "release"):
        assert command in out


@pytest.mark.parametrize("command", ["demo", "release", "reap", "emulator"])
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: dropship " + command in capsys.readouterr().out


def test_release_without_server_fails_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["release", "v1.0.0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dropship: set PREFECT_API_URL") and err.count("\n") == 1


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "dropship"
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("dropship ")
