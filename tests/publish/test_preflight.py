"""The repository server check that runs before any machine: a real sshd, real folders."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dropship.errors import ConfigError
from dropship.publish.preflight import check_local_root, check_ssh_root
from dropship.ssh import generate_keypair
from tests.conftest import EXAMPLE
from tests.servers import RepoServerHost, start_repo_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RepoServerHost]:
    host = start_repo_server(tmp_path / "server")
    try:
        yield host
    finally:
        host.stop()


def test_a_reachable_server_with_a_writable_root_passes(server: RepoServerHost) -> None:
    root = str(server.root / "repo")
    assert check_ssh_root(server.endpoint, server.private_key, root, "block 'r'").endswith(root)
    assert (server.root / "repo").is_dir()
    assert list((server.root / "repo").iterdir()) == [], "the probe file is removed"


def test_a_changed_host_key_is_refused_before_any_machine(server: RepoServerHost) -> None:
    other = replace(server.endpoint, host_public_key=generate_keypair("impostor").public_line)
    with pytest.raises(ConfigError, match=r"block 'r': .*instead of the pinned.*update host_public_key"):
        check_ssh_root(other, server.private_key, str(server.root), "block 'r'")


def test_an_unwritable_root_and_a_refused_key_are_named(server: RepoServerHost) -> None:
    (server.root / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"is not usable: .*cannot write into"):
        check_ssh_root(server.endpoint, server.private_key, str(server.root / "file" / "repo"), "block 'r'")
    with pytest.raises(ConfigError, match="refused our SSH key"):
        check_ssh_root(server.endpoint, generate_keypair("stranger").private_openssh, str(server.root), "block 'r'")


def test_an_unreachable_server_fails_within_the_connect_timeout(server: RepoServerHost) -> None:
    server.stop()
    started = time.monotonic()
    with pytest.raises(ConfigError, match="could not reach"):
        check_ssh_root(server.endpoint, server.private_key, str(server.root), "block 'r'", connect_timeout=2)
    assert time.monotonic() - started < 15


def test_local_root_must_be_absolute_and_writable(tmp_path: Path) -> None:
    assert check_local_root(tmp_path / "a" / "b", "block 'l'") == str(tmp_path / "a" / "b")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"block 'l': cannot write into"):
        check_local_root(tmp_path / "file" / "repo", "block 'l'")
    with pytest.raises(ConfigError, match="must be absolute"):
        check_local_root(Path("relative/repo"), "block 'l'")


def test_blocks_from_prefect_are_checked_against_sshd(prefect_server: str, server: RepoServerHost) -> None:
    """What the release's preflight does: the block from the Prefect server, the check against sshd."""
    from pydantic import SecretStr

    from blocks.repo_server import RepoServer
    from blocks.values import load_block, repo_value
    from dropship.checks import check_repo_server
    from dropship.manifest import load_manifest

    manifest = load_manifest(EXAMPLE / "dropship.toml")

    def check(name: str) -> str:
        block = load_block(RepoServer, name)
        renamed = manifest.model_copy(update={"blocks": manifest.blocks.model_copy(update={"repo_server": name})})
        return check_repo_server(renamed, "dropship.toml", repo_value(block) if block else None).line()

    good = RepoServer(
        path=str(server.root / "repo"),
        host=server.endpoint.host,
        port=server.endpoint.port,
        user=server.endpoint.user,
        ssh_private_key=SecretStr(server.private_key),
        host_public_key=server.endpoint.host_public_key,
    )
    good.save("preflight-good", overwrite=True)
    assert check("preflight-good").startswith("ok") and str(server.root / "repo") in check("preflight-good")
    good.model_copy(update={"host_public_key": generate_keypair("other").public_line}).save(
        "preflight-rekeyed", overwrite=True
    )
    assert re.search(r"^failed .*'preflight-rekeyed': .*instead of the pinned", check("preflight-rekeyed"))
    assert re.search(r"^missing .*'preflight-missing': no such block -> dropship blocks", check("preflight-missing"))
