"""Everything a release needs, checked before any test or machine.

`dropship check` prints these lines, and the release flow's first stage runs
the same checks and stops naming each check that is not ok, with its fix. The caller loads the blocks
(Prefect's side: `blocks.values.load_inputs`) and passes their values here,
so this module needs no Prefect: `None` means the block does not exist.

Each check gives one line: `ok`, `missing` or `failed`, what was checked,
what was found, and for anything not ok the command that fixes it.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from dropship.containers import RegistryValue, parse_image, pin_build_image, refuse_loopback_for_droplets
from dropship.errors import ConfigError, DropshipError
from dropship.machines.bootstrap import image_hash
from dropship.machines.digitalocean import DigitalOceanProvider, DigitalOceanSettings, image_hash_of
from dropship.machines.provision import target_setup
from dropship.machines.sshd import find_sshd
from dropship.manifest import Manifest
from dropship.publish.preflight import check_local_root, check_ssh_root
from dropship.signing import Signer
from dropship.ssh import Endpoint

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

    def problem(self) -> str:
        """The check as an error message: `release failed: <what>: <detail> -> <fix>`. The
        error already says "failed" (and `line()`'s column padding would show in it);
        "missing" stays, it says what kind of failure."""
        text = f"{self.what}: {self.detail}" if self.status == FAILED else f"{self.status} {self.what}: {self.detail}"
        return f"{text} -> {self.fix}" if self.fix else text


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
    build_registries: dict[str, RegistryValue | None] = field(default_factory=dict)
    """The `container_credentials` blocks of targets with a `container`, by name (`dropship.containers`)."""


class PreflightFailed(ConfigError):
    """Something the release needs is missing or broken; one line per check that is not ok."""

    def __init__(self, checks: Sequence[Check]) -> None:
        self.checks = list(checks)
        problems = [c.problem() for c in self.checks]
        if len(problems) == 1:
            super().__init__(problems[0])
        else:  # each under a head that says they failed, as a failed target's output lines are
            super().__init__(f"{len(problems)} checks are not ok:\n" + "\n".join(f"    {p}" for p in problems))


def blocks_command(manifest_path: str, *flags: str) -> str:
    return shlex.join(["dropship", "blocks", "--manifest", manifest_path, *flags])


def check_signing_key(manifest: Manifest, manifest_path: str, key: KeyValue | None) -> Check:
    name = manifest.blocks.signing_key
    what = f"signing key block {name!r}"
    fix = blocks_command(manifest_path, "--signing-key-file", "FILE")
    if key is None:
        return Check(what, MISSING, "no such block", fix + "  (or --generate NAME --email E)")
    try:
        with Signer(
            key.armored, passphrase=key.passphrase, min_validity=timedelta(days=key.min_validity_days)
        ) as signer:
            described = ", ".join(
                f"{k.fingerprint[-16:]} " + (f"expires {k.expires:%Y-%m-%d}" if k.expires else "never expires")
                for k in signer.keys
            )
    except DropshipError as exc:
        return Check(what, FAILED, str(exc).splitlines()[0], fix)
    return Check(what, OK, described)


def check_repo_server(manifest: Manifest, manifest_path: str, repo: RepoValue | None) -> Check:
    """A folder here: exists or can be made, takes a file. Over SSH: the pinned host key, the key
    accepted, a writable root and the publisher's remote tools (`dropship.publish.preflight`)."""
    name = manifest.blocks.repo_server
    what = f"repository server block {name!r}"
    if repo is None:
        fix = blocks_command(manifest_path, "--repo-path", "DIR")
        return Check(
            what,
            MISSING,
            "no such block",
            fix + "  (or --repo-host H --repo-user U --repo-key-file F --repo-host-key-scan)",
        )
    if not repo.host:
        fix = blocks_command(manifest_path, "--repo-path", "DIR")
        try:
            where = check_local_root(Path(repo.path), what)
        except DropshipError as exc:
            return Check(what, FAILED, str(exc).removeprefix(f"{what}: ").splitlines()[0], fix)
        return Check(what, OK, f"folder {where} is writable")
    fix = blocks_command(
        manifest_path,
        "--repo-host",
        repo.host,
        "--repo-port",
        str(repo.port),
        "--repo-user",
        repo.user,
        "--repo-path",
        repo.path,
        "--repo-key-file",
        "FILE",
        "--repo-host-key-scan",
    )
    if not repo.private_key or not repo.host_public_key:
        return Check(what, FAILED, f"host {repo.host} needs an SSH key and the server's pinned host key", fix)
    endpoint = Endpoint(repo.host, repo.port, repo.user, repo.host_public_key)
    try:
        where = check_ssh_root(endpoint, repo.private_key, repo.path, what)
    except DropshipError as exc:
        return Check(what, FAILED, str(exc).removeprefix(f"{what}: ").splitlines()[0], fix)
    return Check(what, OK, f"{where} answered with the pinned host key and is writable")


def check_provider(
    manifest: Manifest,
    manifest_path: str,
    provider: str,
    targets: Sequence[str],
    digitalocean: DigitalOceanSettings | None,
) -> Check:
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
        DigitalOceanProvider(digitalocean).preflight([(s["size"], s["image"], s["region"]) for s in specs])
    except DropshipError as exc:  # the block's command fixes a token; other refusals say their own fix
        reason = str(exc).splitlines()[0]
        return Check(what, FAILED, reason, fix if "token" in reason.lower() else "")
    stale = stale_images(manifest, targets)
    if stale:
        return Check(
            f"image of target {stale}",
            FAILED,
            "the snapshot was built for another dropship, Prefect or setup than this orchestrator's",
            image_build_command(manifest_path, stale),
        )
    return Check(
        what, OK, f"token accepted by {digitalocean.endpoint}; sizes, regions, images and the droplet limit fit"
    )


def image_build_command(manifest_path: str, target: str) -> str:
    return f"dropship image build --manifest {manifest_path} --target {target}"


def stale_images(manifest: Manifest, targets: Sequence[str]) -> str | None:
    """The first target whose snapshot (named by `dropship image build`) records another
    dropship, Prefect or setup than this orchestrator would install; None if all match."""
    for name in targets:
        target = manifest.target(name)
        recorded = image_hash_of(manifest.machine_spec(target)["image"])
        if recorded is None:
            continue
        base, digest = recorded
        if image_hash(base, target_setup(manifest, target))[:20] != digest:
            return name
    return None


def check_build_images(
    manifest: Manifest, targets: Sequence[str], registries: dict[str, RegistryValue | None], provider: str = "local"
) -> list[Check]:
    """One line per target with a `container`: its block is there and for the image's registry, the
    registry takes it, and has the image (`dropship.containers.pin_build_image`, as the plan stage);
    `ok` names the digest the tag points at now."""
    checks = []
    for name in targets:
        target = manifest.target(name)
        if target.container is None:
            continue
        what = f"build image of {name}"
        image = parse_image(target.container)
        block = target.container_credentials
        fix = (
            f"save a prefect-docker DockerRegistryCredentials block {block!r} with registry_url {image.registry} "
            "and its username and password"
        )
        try:
            refuse_loopback_for_droplets(manifest, name, provider)
        except DropshipError as exc:
            checks.append(Check(what, FAILED, str(exc)))  # the message says what to do
            continue
        if registries.get(block) is None:
            checks.append(Check(what, MISSING, f"no DockerRegistryCredentials block {block!r}", fix))
            continue
        try:
            _, digest = pin_build_image(manifest, name, registries)
        except DropshipError as exc:
            checks.append(Check(what, FAILED, str(exc).splitlines()[0], fix))
            continue
        checks.append(Check(what, OK, f"{image.name} is {digest[:19]}"))
    return checks


def run_checks(
    manifest: Manifest,
    manifest_path: str,
    inputs: Inputs,
    *,
    provider: str | None = None,
    targets: Sequence[str] | None = None,
    build_images: bool = True,
) -> list[Check]:
    """Every check after the manifest's; none creates a machine. `build_images=False` leaves the
    build containers' images out (the release's plan stage has already resolved them)."""
    chosen = provider or manifest.machines.provider
    names = list(targets) if targets else [t.name for t in manifest.targets]
    return [
        check_signing_key(manifest, manifest_path, inputs.signing_key),
        check_repo_server(manifest, manifest_path, inputs.repo_server),
        check_provider(manifest, manifest_path, chosen, names, inputs.digitalocean),
        *(check_build_images(manifest, names, inputs.build_registries, chosen) if build_images else []),
    ]


def require(checks: Sequence[Check]) -> None:
    """Raise `PreflightFailed` with the lines of every check that is not ok."""
    bad = [c for c in checks if not c.ok]
    if bad:
        raise PreflightFailed(bad)
