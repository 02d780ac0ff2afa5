"""Real package clients with isolated state, for the tests.

apt-get and dnf run against a repository served on 127.0.0.1, with every
piece of state (lists, caches, sources, keyrings, rpmdb) in a temporary
folder, so the test machine's own configuration is neither read nor changed.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from dropship.integration import APT_HOME_FOLDERS, apt_home_options


class ClientFailed(AssertionError):
    def __init__(self, argv: list[str], output: str) -> None:
        self.output = output
        super().__init__(f"{' '.join(argv[:2])} ... failed:\n{output[-3000:]}")


def _run(argv: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if done.returncode != 0:
        raise ClientFailed(argv, done.stdout)
    return done.stdout


@dataclass
class AptClient:
    home: Path
    base_url: str
    keyring: Path
    suite: str
    component: str = "main"
    arch: str = "amd64"

    def __post_init__(self) -> None:
        for sub in (*APT_HOME_FOLDERS, "downloads"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        (self.home / "etc/sources.list").write_text(
            f"deb [signed-by={self.keyring}] {self.base_url} {self.suite} {self.component}\n"
        )

    def options(self) -> list[str]:
        """An apt of its own in `home` that knows no installed package."""
        return [*apt_home_options(self.home, [self.arch]), "-o", "Dir::State::status=/dev/null"]

    def update(self) -> str:
        output = _run(["apt-get", *self.options(), "update"])
        # apt-get update exits 0 on some fetch/verify failures and only warns.
        if "\nW: " in "\n" + output or "\nE: " in "\n" + output or "Err:" in output:
            raise ClientFailed(["apt-get", "update"], output)
        return output

    def policy(self, package: str) -> str:
        return _run(["apt-cache", *self.options(), "policy", package])

    def download(self, package: str) -> Path:
        folder = self.home / "downloads"
        for old in folder.glob("*.deb"):
            old.unlink()
        _run(["apt-get", *self.options(), "download", package], cwd=folder)
        (deb,) = folder.glob("*.deb")
        return deb


def run_packaged_hello(deb: Path, into: Path) -> str:
    """Unpack a downloaded .deb and run its /usr/bin/hello."""
    _run(["dpkg-deb", "-x", str(deb), str(into)])
    return _run([str(into / "usr/bin/hello")]).strip()


@dataclass
class DnfClient:
    home: Path
    repo_file: str
    """The published .repo file's text."""
    key_url: str
    arch: str = "x86_64"

    def __post_init__(self) -> None:
        for sub in ("repos", "root", "cache", "downloads"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        text = "\n".join(
            f"gpgkey={self.key_url}" if line.startswith("gpgkey=") else line for line in self.repo_file.splitlines()
        )
        (self.home / "repos/dropship.repo").write_text(text + "\n")
        (self.home / "dnf.conf").write_text(
            f"[main]\ngpgcheck=1\nrepo_gpgcheck=1\nreposdir={self.home}/repos\ncachedir={self.home}/cache\n"
        )

    def download(self, package: str) -> Path:
        folder = self.home / "downloads"
        for old in folder.glob("*.rpm"):
            old.unlink()
        _run(
            [
                "dnf",
                "-y",
                "--config",
                str(self.home / "dnf.conf"),
                "--installroot",
                str(self.home / "root"),
                "--setopt",
                f"reposdir={self.home}/repos",
                "--releasever",
                "12",
                "--forcearch",
                self.arch,
                "--refresh",
                "download",
                package,
            ],
            cwd=folder,
        )
        (rpm,) = folder.glob("*.rpm")
        return rpm


def rpm_verify(key: Path, rpms: list[Path], dbpath: Path) -> str:
    """`rpm -K` every package against only `key`, in a private rpmdb."""
    dbpath.mkdir(parents=True, exist_ok=True)
    _run(["rpm", "--dbpath", str(dbpath), "--import", str(key)])
    return _run(["rpm", "--dbpath", str(dbpath), "-K", *map(str, rpms)])
