"""Everything a release needs, checked before any test or machine.

`dropship check` prints these lines, and the release flow's first stage runs
the same checks and stops with the same lines. The caller loads the blocks
(Prefect's side: `blocks.values.load_inputs`) and passes their values here,
so this module needs no Prefect: `None` means the block does not exist.

Each check gives one line: `ok`, `missing` or `failed`, what was checked,
what was found, and for anything not ok the command that fixes it.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from dropship.errors import ConfigError, DropshipError
from dropship.machines.digitalocean import DigitalOceanProvider, DigitalOceanSettings
from dropship.machines.local import find_sshd
from dropship.manifest import Manifest
from dropship.signing import Signer
from dropship.ssh import Endpoint, SshSession

OK, MISSING, FAILED = "ok", "missing", "failed"


@dataclass(frozen=True)
class Check:
    what: str
    status: str
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    def line(self) -> str:
        text = f"{self.status:<7} {self.what}: {self.detail}"
        return f"{text} -> {self.fix}" if self.fix and not self.ok else text


@dataclass(frozen=True)
class KeyValue:
    """A SigningKey block's values."""

    armored: list[str]
    passphrase: str | None
    min_validity_days: int


@dataclass(frozen=True)
class RepoValue:
    """A RepoServer block's values."""

    path: str
    host: str | None = None
    port: int = 22
    user: str = "dropship"
    private_key: str | None = None
    host_public_key: str | None = None


@dataclass(frozen=True)
class Inputs:
    """The blocks a release uses, as loaded (None: no such block)."""

    signing_key: KeyValue | None
    repo_server: RepoValue | None
    digitalocean: DigitalOceanSettings | None


class PreflightFailed(ConfigError):
    """Something the release needs is missing or broken; the message is the `dropship check` lines."""

    def __init__(self, checks: Sequence[Check]) -> None:
        self.checks = list(checks)
        super().__init__("\n".join(c.line() for c in self.checks))


def blocks_command(manifest_path: str, *flags: str) -> str:
    return shlex.join(["dropship", "blocks", "--manifest", manifest_path, *flags])


def check_signing_key(manifest: Manifest, manifest_path: str, key: KeyValue | None) -> Check:
    name = manifest.blocks.signing_key
    what = f"signing key block {name!r}"
    fix = blocks_command(manifest_path, "--signing-key-file", "FILE")
    if key is None:
        return Check(what, MISSING, "no such block", fix + "  (or --generate NAME --email E)")
    try:
        with Signer(key.armored, passphrase=key.passphrase, min_validity=timedelta(days=key.min_validity_days)) as signer:
            described = ", ".join(
                f"{k.fingerprint[-16:]} " + (f"expires {k.expires:%Y-%m-%d}" if k.expires else "never expires")
                for k in signer.keys
            )
    except DropshipError as exc:
        return Check(what, FAILED, str(exc).splitlines()[0], fix)
    return Check(what, OK, described)


def _writable_local(path: Path) -> str | None:
    """None if `path` is (or can be made as) a writable folder, else why not."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return f"no existing parent of {path}"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user"
    return None


def check_repo_server(manifest: Manifest, manifest_path: str, repo: RepoValue | None,
                      connect: Callable[[RepoValue], None] | None = None) -> Check:
    name = manifest.blocks.repo_server
    what = f"repository server block {name!r}"
    if repo is None:
        fix = blocks_command(manifest_path, "--repo-path", "DIR")
        return Check(what, MISSING, "no such block", fix + "  (or --repo-host H --repo-user U --repo-key-file F --repo-host-key-scan)")
    if not repo.host:
        fix = blocks_command(manifest_path, "--repo-path", "DIR")
        problem = _writable_local(Path(repo.path))
        if problem:
            return Check(what, FAILED, problem, fix)
        return Check(what, OK, f"folder {repo.path} is writable")
    fix = blocks_command(manifest_path, "--repo-host", repo.host, "--repo-port", str(repo.port), "--repo-user", repo.user,
                         "--repo-key-file", "FILE", "--repo-host-key-scan")
    if not repo.private_key or not repo.host_public_key:
        return Check(what, FAILED, f"host {repo.host} needs an SSH key and the server's pinned host key", fix)
    try:
        (connect or reach_over_ssh)(repo)
    except DropshipError as exc:
        return Check(what, FAILED, str(exc).splitlines()[0], fix)
    return Check(what, OK, f"{repo.user}@{repo.host}:{repo.port} answered with the pinned host key; {repo.path} is writable")


def reach_over_ssh(repo: RepoValue) -> None:
    """Connect with the pinned host key and check the root (or the folder it will be made in) is writable."""
    assert repo.host and repo.private_key and repo.host_public_key
    endpoint = Endpoint(repo.host, repo.port, repo.user, repo.host_public_key)
    with SshSession(endpoint, repo.private_key, connect_timeout=15) as session:
        session.run(["mkdir", "-p", repo.path])
        session.run(["test", "-w", repo.path])


def check_provider(manifest: Manifest, manifest_path: str, provider: str, targets: Sequence[str],
                   digitalocean: DigitalOceanSettings | None) -> Check:
    if provider == "local":
        what = "local machines"
        try:
            sshd = find_sshd()
        except DropshipError as exc:
            return Check(what, FAILED, str(exc), "apt-get install openssh-server")
        return Check(what, OK, f"sshd at {sshd}")
    what = f"DigitalOcean credentials block {manifest.machines.credentials!r}"
    fix = blocks_command(manifest_path, "--do-token-env", "VAR")
    if digitalocean is None:
        return Check(what, MISSING, "no such block", fix)
    specs = [manifest.machine_spec(manifest.target(name)) for name in targets]
    try:
        DigitalOceanProvider(digitalocean).preflight({s["size"] for s in specs}, {s["region"] for s in specs})
    except DropshipError as exc:
        return Check(what, FAILED, str(exc).splitlines()[0], fix)
    return Check(what, OK, f"token accepted by {digitalocean.endpoint}; sizes and regions exist")


def run_checks(manifest: Manifest, manifest_path: str, inputs: Inputs, *, provider: str | None = None,
               targets: Sequence[str] | None = None) -> list[Check]:
    """Every check after the manifest's; none creates a machine."""
    chosen = provider or manifest.machines.provider
    names = list(targets) if targets else [t.name for t in manifest.targets]
    return [
        check_signing_key(manifest, manifest_path, inputs.signing_key),
        check_repo_server(manifest, manifest_path, inputs.repo_server),
        check_provider(manifest, manifest_path, chosen, names, inputs.digitalocean),
    ]


def require(checks: Sequence[Check]) -> None:
    """Raise `PreflightFailed` with the lines of every check that is not ok."""
    bad = [c for c in checks if not c.ok]
    if bad:
        raise PreflightFailed(bad)
