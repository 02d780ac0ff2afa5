"""The checks `dropship check` prints and the release's preflight raises: real
gpg keys, a real sshd as the repository server, real folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dropship.checks import (
    Inputs,
    KeyValue,
    PreflightFailed,
    RepoValue,
    require,
    run_checks,
)
from dropship.manifest import parse_manifest
from dropship.signing import generate_key
from dropship.ssh import generate_keypair
from tests.servers import start_repo_server

MANIFEST = parse_manifest(
    {
        "project": {"name": "tiny"},
        "targets": [{"name": "amd64-deb", "arch": "amd64", "format": "deb", "build": ["true"], "artifacts": ["*.deb"]}],
        "blocks": {"signing_key": "tiny-key", "repo_server": "tiny-repo"},
    }
)


def _lines(inputs: Inputs, provider: str = "local") -> list[str]:
    return [c.line() for c in run_checks(MANIFEST, "/p/dropship.toml", inputs, provider=provider)]


def test_every_missing_block_is_named_with_the_command_that_creates_it() -> None:
    lines = _lines(Inputs(None, None, None), provider="digitalocean")
    assert lines[0].startswith(
        "missing signing key block 'tiny-key': no such block -> "
        "dropship blocks --manifest /p/dropship.toml --signing-key-file FILE"
    )
    assert lines[1].startswith(
        "missing repository server block 'tiny-repo': no such block -> "
        "dropship blocks --manifest /p/dropship.toml --repo-path DIR"
    )
    assert lines[2] == (
        "missing DigitalOcean credentials block 'dropship-digitalocean': no such block -> "
        "dropship blocks --manifest /p/dropship.toml --do-token-env VAR"
    )
    with pytest.raises(PreflightFailed) as info:
        require(run_checks(MANIFEST, "/p/dropship.toml", Inputs(None, None, None)))
    # several: each under a head that says they are not ok (the release prints "release failed: " before it)
    assert str(info.value).splitlines() == ["2 checks are not ok:", *(f"    {line}" for line in lines[:2])]


def test_a_good_key_and_folder_pass(signing_key: str, tmp_path: Path) -> None:
    lines = _lines(Inputs(KeyValue([signing_key], None, 30), RepoValue(str(tmp_path / "new" / "repo")), None))
    assert lines[0].startswith("ok      signing key block 'tiny-key': ") and "expires" in lines[0]
    assert lines[1] == f"ok      repository server block 'tiny-repo': folder {tmp_path / 'new' / 'repo'} is writable"
    assert lines[2].startswith("ok      local machines: sshd at ")
    require(run_checks(MANIFEST, "x", Inputs(KeyValue([signing_key], None, 30), RepoValue(str(tmp_path)), None)))


def test_unreadable_or_expiring_keys_fail_in_one_line(tmp_path: Path) -> None:
    garbage = KeyValue(["-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nAAAA\n"], None, 30)
    line = _lines(Inputs(garbage, RepoValue(str(tmp_path)), None))[0]
    assert line.startswith("failed  signing key block 'tiny-key': signing key #1 could not be imported")
    assert line.endswith("-> dropship blocks --manifest /p/dropship.toml --signing-key-file FILE") and "\n" not in line
    with pytest.raises(PreflightFailed) as info:  # the release's error: "failed" is said by "release failed:"
        require(run_checks(MANIFEST, "/p/dropship.toml", Inputs(garbage, RepoValue(str(tmp_path)), None)))
    assert str(info.value) == line.removeprefix("failed  ")
    short = KeyValue([generate_key("short", "short@example.invalid", expire_days=3)], None, 30)
    line = _lines(Inputs(short, RepoValue(str(tmp_path)), None))[0]
    assert "within the required 30 days" in line and line.startswith("failed  signing key block")


def test_a_local_repository_that_cannot_be_written_fails(signing_key: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    key = KeyValue([signing_key], None, 30)
    line = _lines(Inputs(key, RepoValue(str(tmp_path / "file" / "repo")), None))[1]
    assert line.startswith(
        f"failed  repository server block 'tiny-repo': cannot write into {tmp_path / 'file' / 'repo'}"
    )
    assert line.endswith("-> dropship blocks --manifest /p/dropship.toml --repo-path DIR")


def test_an_ssh_repository_server_is_reached_with_its_pinned_key(signing_key: str, tmp_path: Path) -> None:
    host = start_repo_server(tmp_path / "server")
    try:
        ep = host.endpoint
        key = KeyValue([signing_key], None, 30)
        good = RepoValue(str(host.root / "repo"), ep.host, ep.port, ep.user, host.private_key, ep.host_public_key)
        line = _lines(Inputs(key, good, None))[1]
        assert line == (
            f"ok      repository server block 'tiny-repo': {ep.user}@{ep.host}:{ep.port}:{host.root / 'repo'} "
            "answered with the pinned host key and is writable"
        )
        impostor = generate_keypair("impostor").public_line
        wrong = RepoValue(good.path, ep.host, ep.port, ep.user, host.private_key, impostor)
        line = _lines(Inputs(key, wrong, None))[1]
        assert line.startswith("failed  repository server block 'tiny-repo': ") and "instead of the pinned" in line
        assert "--repo-host-key-scan" in line
        no_key = RepoValue(good.path, ep.host, ep.port, ep.user, None, ep.host_public_key)
        assert "needs an SSH key" in _lines(Inputs(key, no_key, None))[1]
    finally:
        host.stop()


# --- build containers: one line per target with a container (dropship/containers.py) -----------------


@pytest.mark.skipif(os.geteuid() != 0, reason="dockerd needs root")
def test_build_images_are_checked_against_their_registry(registry: Any, dockerd: Any, tmp_path: Path) -> None:
    """A real htpasswd registry: ok names the digest the tag points at; a missing block, a block for
    another registry, a wrong password and a missing tag each give one line with the fix."""
    from dropship.checks import FAILED, MISSING, OK, RegistryValue, check_build_images
    from tests.registry import push_image

    repository = registry.repository("check/build-tools")
    digest = push_image(dockerd, registry, repository, "1", {"/tool": "#!/bin/sh\n"})

    def manifest(reference: str) -> Any:
        target = {"name": "in-box", "arch": "amd64", "format": "deb", "build": ["make"], "artifacts": ["*.deb"]}
        target.update(container=reference, container_credentials="tools", setup=["docker.io"])
        return parse_manifest({"project": {"name": "tiny"}, "targets": [target]})

    good = RegistryValue(registry.host, registry.username, registry.password)
    cases = [
        (f"{repository}:1", good, OK, f"{repository}:1 is {digest[:19]}"),
        (f"{repository}:1", None, MISSING, "no DockerRegistryCredentials block 'tools'"),
        (
            f"{repository}:1",
            RegistryValue("registry.other.example", registry.username, registry.password),
            FAILED,
            "block 'tools' is for registry registry.other.example, but targets[0].container names",
        ),
        (
            f"{repository}:1",
            RegistryValue(registry.host, registry.username, "wrong-pw-3Tq"),
            FAILED,
            "check the username and password in the DockerRegistryCredentials block",
        ),
        (f"{repository}:2", good, FAILED, f"{repository}:2 is not in the registry {registry.host} (no such tag)"),
    ]
    for reference, value, status, detail in cases:
        (check,) = check_build_images(manifest(reference), ["in-box"], {"tools": value})
        assert (check.what, check.status) == ("build image of in-box", status), check.line()
        assert detail in check.detail and "\n" not in check.line()
        assert registry.password not in check.line() and "wrong-pw-3Tq" not in check.line()
        if status != OK:
            assert "-> save a prefect-docker DockerRegistryCredentials block 'tools'" in check.line()
    assert check_build_images(MANIFEST, ["amd64-deb"], {}) == []  # no container, no line
