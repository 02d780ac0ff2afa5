"""The emulator's stock image: a Debian 12 root like DigitalOcean's `debian-12-x64`.

Made with `debootstrap --variant=minbase` from the mirror this machine's own
apt configuration names, holding what the stock image holds (openssh-server,
cloud-init, python3, apt, sudo, curl, locales) and nothing of dropship: no
venv, no Prefect, no compilers. The host's CA certificates are copied in, so
pip or apt inside reach what the host reaches.

cloud-init is told what DigitalOcean's image is told, adapted to a container
with the emulator as its hypervisor: the NoCloud data source only (never a
metadata address on the network), no network configuration, root logs in with
the droplet's keys (`disable_root: false`).

The root is made once per recipe and kept as a tarball in
`$DROPSHIP_CACHE/images/` (default `~/.cache/dropship/images/`), named by a
hash of the recipe and the host's CA certificates; a lock file keeps two
processes from running debootstrap at once. `docker import` of the tarball
is what each dockerd pays.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from dropship.emulator.dockerd import DockerDaemon
from dropship.errors import CommandError, ConfigError

SLUG = "debian-12-x64"
SUITE = "bookworm"
BASE_PACKAGES = ("openssh-server", "python3", "ca-certificates")
PACKAGES = ("cloud-init", "locales", "sudo", "curl", "procps", "iproute2", "netbase", "less")
"""Installed with apt-get in the new root (debootstrap's own resolver fails configuring cloud-init's tree)."""
CA_SOURCES = (Path("/usr/local/share/ca-certificates"), Path("/etc/ssl/certs"))

CLOUD_CFG = """\
# The emulator's hypervisor hands cloud-init a NoCloud seed, as DigitalOcean
# hands its images their metadata; nothing is probed on the network.
datasource_list: [ NoCloud, None ]
network: {config: disabled}
disable_root: false
ssh_pwauth: false
preserve_hostname: true
manage_etc_hosts: false
"""

LOCALE_GEN = "en_US.UTF-8 UTF-8\n"
RECIPE_VERSION = 3  # bump when the steps below change


def apt_mirror(apt_dir: Path = Path("/etc/apt"), suite: str = SUITE) -> str:
    """The Debian mirror this machine's apt uses for `suite` (deb822 sources first, then sources.list)."""
    for sources in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in sources.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
                continue
            if suite in fields.get("suites", "").split() and fields.get("uris"):
                return fields["uris"].split()[0]
    lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            words = [w for w in line.split("#")[0].split() if not w.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1]
    raise ConfigError(f"no apt source for Debian {suite} in {apt_dir}: add one (the emulator's image is built from it)")


def _ca_files() -> Iterator[Path]:
    for folder in CA_SOURCES:
        if folder.is_dir():
            yield from sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def recipe_key(mirror: str) -> str:
    """Hash of everything that makes the tarball: the steps, packages, config, mirror and host CAs."""
    digest = hashlib.sha256(
        json.dumps([RECIPE_VERSION, SUITE, BASE_PACKAGES, PACKAGES, CLOUD_CFG, LOCALE_GEN, mirror]).encode()
    )
    for path in _ca_files():
        digest.update(str(path).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    base = os.environ.get("DROPSHIP_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "dropship") / "images"


def _run(argv: list[str], what: str, timeout: float = 1800) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ConfigError(f"{argv[0]} not found: install Debian's {argv[0]} to build the emulator's image") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, -1, str(exc.stdout or ""), what=f"{what} (timed out)") from exc
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout + proc.stderr, what=what)


def _install(root: Path) -> None:
    """apt-get install the rest in the new root, with /proc mounted and no service started."""
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    _run(["mount", "-t", "proc", "proc", str(root / "proc")], "mount /proc in the image root")
    try:
        env = ["env", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C"]
        _run(["chroot", str(root), *env, "apt-get", "update", "-q"], "apt-get update in the image root")
        _run(
            ["chroot", str(root), *env, "apt-get", "install", "-q", "-y", "--no-install-recommends", *PACKAGES],
            "apt-get install in the image root",
        )
        _run(["chroot", str(root), "apt-get", "clean"], "apt-get clean in the image root")
    finally:
        subprocess.run(["umount", "-l", str(root / "proc")], capture_output=True, check=False)
    policy.unlink()


def _customise(root: Path) -> None:
    """What the stock image carries beyond the packages: CAs, cloud-init and locale settings, no caches."""
    local_ca = root / "usr/local/share/ca-certificates"
    local_ca.mkdir(parents=True, exist_ok=True)
    if CA_SOURCES[0].is_dir():
        shutil.copytree(CA_SOURCES[0], local_ca, dirs_exist_ok=True)
    bundle = CA_SOURCES[1] / "ca-certificates.crt"
    _run(["chroot", str(root), "update-ca-certificates", "--fresh"], "update-ca-certificates in the image")
    if bundle.exists():  # the host's bundle wins: it is what the host trusts right now
        shutil.copyfile(bundle, root / "etc/ssl/certs/ca-certificates.crt")
    (root / "etc/cloud/cloud.cfg.d/10_emulator.cfg").write_text(CLOUD_CFG)
    (root / "etc/locale.gen").write_text(LOCALE_GEN)
    _run(["chroot", str(root), "locale-gen"], "locale-gen in the image")
    (root / "etc/default/locale").write_text("LANG=en_US.UTF-8\n")
    for folder in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log", "tmp"):
        for entry in (root / folder).glob("*"):
            if entry.is_file() or entry.is_symlink():
                entry.unlink()
            elif entry.is_dir() and entry.name not in ("partial", "apt"):
                shutil.rmtree(entry)
    (root / "etc/hostname").write_text("localhost\n")
    machine_id = root / "etc/machine-id"
    if machine_id.exists():
        machine_id.write_text("")  # each droplet's own, as cloud images ship it empty


class BuildLog:
    """Timings of the last build, for the report and the tests' `-s` output."""

    debootstrap_seconds: float | None = None
    import_seconds: float | None = None


def ensure_tarball(cache: Path | None = None, log: BuildLog | None = None) -> Path:
    """The stock image's root as a tarball in the cache; built (once, under a lock) if missing."""
    if os.geteuid() != 0:
        raise ConfigError("building the emulator's image needs root (debootstrap and chroot)")
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    mirror = apt_mirror()
    tarball = cache / f"{SLUG}-{recipe_key(mirror)}.tar"
    if tarball.exists():
        return tarball
    with (cache / f"{tarball.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait, then use its tarball
        if tarball.exists():
            return tarball
        with tempfile.TemporaryDirectory(prefix="root-", dir=cache) as work:
            root = Path(work) / "root"
            started = time.monotonic()
            try:
                _run(
                    [
                        "debootstrap",
                        "--variant=minbase",
                        f"--include={','.join(BASE_PACKAGES)}",
                        SUITE,
                        str(root),
                        mirror,
                    ],
                    f"debootstrap of Debian {SUITE} from {mirror}",
                )
            except CommandError as exc:
                detail = root / "debootstrap" / "debootstrap.log"
                if detail.exists():
                    exc.args = (f"{exc.args[0]}\n{detail.read_text(errors='replace')[-1500:]}",)
                raise
            _install(root)
            _customise(root)
            partial = tarball.with_suffix(".tar.partial")
            _run(
                ["tar", "-C", str(root), "--numeric-owner", "--xattrs", "-cf", str(partial), "."],
                "tar of the image root",
            )
            partial.replace(tarball)
            if log is not None:
                log.debootstrap_seconds = time.monotonic() - started
    return tarball


REPOSITORY = "dropship-emulator/debian-12-x64"


def ensure_image(daemon: DockerDaemon, cache: Path | None = None, log: BuildLog | None = None) -> str:
    """The stock image's reference in `daemon`, imported from the cached tarball (built if missing)."""
    tarball = ensure_tarball(cache, log)
    tag = tarball.stem.rsplit("-", 1)[-1]
    ref = f"{REPOSITORY}:{tag}"
    if not daemon.has_image(ref):
        started = time.monotonic()
        daemon.import_tarball(tarball, REPOSITORY, tag)
        if log is not None:
            log.import_seconds = time.monotonic() - started
    return ref
