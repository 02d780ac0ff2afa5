"""The stock image: its mirror comes from this machine's apt sources, it is cached by
recipe, and it holds what DigitalOcean's debian-12-x64 holds and nothing of dropship."""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from dropship.emulator.dockerd import DockerDaemon
from dropship.emulator.image import (
    SLUG,
    BuildLog,
    apt_mirror,
    ensure_tarball,
    recipe_key,
)
from dropship.errors import ConfigError


def test_mirror_comes_from_deb822_sources_then_sources_list(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert apt_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("# old style\ndeb [arch=amd64] http://old.example/debian bookworm main\n")
    assert apt_mirror(tmp_path) == "http://old.example/debian"
    (tmp_path / "sources.list").write_text("deb http://old.example/debian trixie main\n")
    with pytest.raises(ConfigError, match="no apt source for Debian bookworm"):
        apt_mirror(tmp_path)


def test_recipe_key_depends_on_the_mirror() -> None:
    assert recipe_key("http://a.example/debian") != recipe_key("http://b.example/debian")
    assert recipe_key("http://a.example/debian") == recipe_key("http://a.example/debian")


def test_cached_tarball_is_reused_and_holds_the_stock_image(stock_image: str) -> None:
    log = BuildLog()
    tarball = ensure_tarball(log=log)
    assert log.debootstrap_seconds is None  # cached: no debootstrap this time
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for present in (
        "./usr/bin/cloud-init",
        "./usr/sbin/sshd",
        "./usr/bin/python3",
        "./usr/bin/apt-get",
        "./etc/cloud/cloud.cfg.d/10_emulator.cfg",
        "./etc/ssh/ssh_host_ed25519_key.pub",
    ):
        assert present in names
    for absent in ("./usr/bin/gcc", "./usr/bin/cc", "./usr/bin/pip3"):
        assert absent not in names
    assert not [n for n in names if "/prefect" in n or "/dropship" in n or n.endswith("/pyvenv.cfg")]


def test_image_trusts_the_hosts_certificates(dockerd: DockerDaemon, stock_image: str) -> None:
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    inside: bytes = dockerd.client.containers.run(stock_image, ["cat", str(bundle)], remove=True, network_mode="none")
    assert hashlib.sha256(inside).hexdigest() == hashlib.sha256(bundle.read_bytes()).hexdigest()
    for local in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        listed: bytes = dockerd.client.containers.run(
            stock_image, ["ls", "/usr/local/share/ca-certificates"], remove=True, network_mode="none"
        )
        assert local.name in listed.decode().split()


def test_image_resolves_python_against_the_mirror_with_apt(dockerd: DockerDaemon, stock_image: str) -> None:
    """apt inside knows the host's mirror (what a bootstrap uses to get python3-venv)."""
    sources: bytes = dockerd.client.containers.run(
        stock_image, ["cat", "/etc/apt/sources.list"], remove=True, network_mode="none"
    )
    assert apt_mirror() in sources.decode()
    version = subprocess.run(["python3", "--version"], capture_output=True, text=True, check=True).stdout.split()[1]
    inside: bytes = dockerd.client.containers.run(
        stock_image, ["python3", "--version"], remove=True, network_mode="none"
    )
    assert inside.decode().split()[1].rsplit(".", 1)[0] == version.rsplit(".", 1)[0]  # bookworm's 3.11, as the host


def test_a_second_builder_waits_for_the_first_and_uses_its_tarball(tmp_path: Path) -> None:
    """The lock: while another process builds, ensure_tarball waits, then takes its result (no debootstrap)."""
    tarball = tmp_path / f"{SLUG}-{recipe_key(apt_mirror())}.tar"
    results: list[Path] = []
    log = BuildLog()
    with (tmp_path / f"{tarball.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # "another process" is building
        waiter = threading.Thread(target=lambda: results.append(ensure_tarball(tmp_path, log)))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive() and not results  # waiting on the lock, not building
        tarball.write_bytes(b"the other builder's tarball")
    waiter.join(timeout=10)
    assert results == [tarball] and log.debootstrap_seconds is None
