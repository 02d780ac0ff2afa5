"""RegistryCredentials: the upload password read on the orchestrator from a reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocks.registry import RegistryCredentials
from dropship.errors import ConfigError


def test_the_password_comes_from_a_private_file_without_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.touch(mode=0o600)
    path.write_text("s3cret with spaces \n")
    block = RegistryCredentials(username="uploader", password_file=str(path))
    assert block.secret() == "s3cret with spaces "
    assert "s3cret" not in block.model_dump_json(), "only the reference is stored"


def test_a_file_other_users_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("s3cret\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        RegistryCredentials(password_file=str(path)).secret()


def test_the_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPLOAD_TOKEN", "pypi-token")
    assert RegistryCredentials(password_env="UPLOAD_TOKEN").secret() == "pypi-token"
    monkeypatch.delenv("UPLOAD_TOKEN")
    with pytest.raises(ConfigError, match="UPLOAD_TOKEN is empty or unset"):
        RegistryCredentials(password_env="UPLOAD_TOKEN").secret()


def test_no_password_at_all_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="no secret configured"):
        RegistryCredentials().secret()
