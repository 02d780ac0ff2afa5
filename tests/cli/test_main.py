from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "release"):
        assert command in out


@pytest.mark.parametrize(
    "command",
    [
        "demo",
        "release",
        "reap",
        "emulator",
        "status",
        "webhook",
        "promote",
        "rollback",
        "deployments",
        "keys",
        "deployments apply",
        "keys generate",
        "keys export",
        "image",
        "image build",
    ],
)
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command.split(), "--help"])
    assert info.value.code == 0
    assert "usage: dropship " + command in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["release", "v1.0.0"],
        ["status"],
        ["promote", "x", "--as", "v1.0.0"],
        ["rollback"],
        ["webhook"],
        ["deployments", "apply"],
    ],
)
def test_server_commands_without_server_fail_in_one_line(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("dropship: set PREFECT_API_URL") and err.count("\n") == 1


def test_keys_generate_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "release.asc"
    assert (
        main(["keys", "generate", "--name", "Example release key", "--email", "rel@example.invalid", "--out", str(key)])
        == 0
    )
    assert key.stat().st_mode & 0o077 == 0 and "PRIVATE KEY BLOCK" in key.read_text()
    fingerprint = capsys.readouterr().out.split("fingerprint: ")[1].strip()
    assert main(["keys", "export", "--file", str(key)]) == 0
    public = capsys.readouterr().out
    assert public.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----") and "PRIVATE" not in public
    from dropship.signing import Signer

    with Signer([key.read_text()]) as signer:
        assert signer.fingerprints == [fingerprint]
    assert main(["keys", "generate", "--name", "x", "--email", "x@example.invalid", "--out", str(key)]) == 1
    assert capsys.readouterr().err == f"dropship: {key} exists; a signing key is never overwritten\n"


def test_release_without_server_fails_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["release", "v1.0.0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dropship: set PREFECT_API_URL") and err.count("\n") == 1


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "dropship"
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("dropship ")


@pytest.mark.parametrize(
    ("publish", "expected"),
    [
        ("orchestrator.dropship.test:4200", "write NAME:PORT=HOST:PORT"),
        ("127.0.0.1:4200=127.0.0.1:4200", "publish a name, not an address"),
        ("orchestrator.dropship.test=127.0.0.1:4200", "is not host:port"),
    ],
)
def test_emulator_refuses_a_bad_publish_in_one_line(
    publish: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["emulator", "--machines", "processes", "--token", "t", "--state", str(tmp_path), "--publish", publish]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
