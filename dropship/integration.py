"""Integration jobs: the release's packages installed from the signed tree on a fresh machine.

Before anything is published, a new machine (not a build machine) gets the
part of the signed repository tree the job needs over SFTP: the suite's
signed indices, the public key and this release's package files. There the
real `apt-get` (with `signed-by` the tree's keyring) or `dnf` (`gpgcheck=1`,
`repo_gpgcheck=1`) installs them into an isolated root under the machine's
work folder, never into the machine's own system, and the job's command runs
with the root's binaries and libraries first on its paths.

- **deb**: apt resolves `Depends:` against the machine's own dpkg status
  (read-only) plus the release's repository, and nothing else. A dependency
  the machine does not have and the release does not ship fails the job with
  apt's message. dpkg then unpacks into the root (`--root`); the
  dependencies apt found satisfied are the machine's, so `--force-depends`
  only tells dpkg that the root's empty database is not the whole system.
- **rpm**: a Debian machine has no rpmdb, so the libraries the release's
  RPMs require (`libc.so.6(GLIBC_2.34)(64bit)`...) are declared by a local
  package built from what `elfdeps --provides` reads in the machine's own
  library files. Only requirements the machine really satisfies are declared;
  dnf resolves the rest against the signed repository and fails on anything
  missing.
- **another arch**: the packages install (apt and dnf handle foreign
  architectures), but the command only runs when the machine can execute the
  arch. An arm64 job on an amd64 host reports "installed, not executed".
"""

from __future__ import annotations

import re
import shlex
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dropship.errors import JobFailed, RepositoryError
from dropship.machines import WORK_DIR, Machine, MachineRequest, Provider, run_tag
from dropship.machines.bootstrap import connect_pinned
from dropship.machines.userdata import check_public_keys, heredoc, render_bootstrap
from dropship.manifest import Arch, Manifest, PackageFormat
from dropship.process import run
from dropship.repos.apt import read_deb
from dropship.repos.rpm import read_headers
from dropship.ssh import SshSession, generate_keypair
from dropship.summary import JobOutcome

EXIT_MARK = "dropship-exit="
BASE_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
UNAME = {"x86_64": "amd64", "aarch64": "arm64"}
SONAME_REQ = re.compile(r"^([A-Za-z0-9_.+-]+\.so[0-9.]*)\(")


@dataclass(frozen=True)
class Install:
    """What one integration job installs: from which files of the tree, under which names."""

    format: PackageFormat
    arch: Arch
    specs: tuple[str, ...]
    """apt `name:arch=version` or dnf `name-version-release.arch`."""
    files: tuple[str, ...]
    """Tree paths the machine needs, relative to the tree root."""
    requires: tuple[str, ...] = ()
    """rpm: the packages' requirements on libraries (to be found on the machine)."""


def _under(tree: Path, relative: str) -> list[str]:
    base = tree / relative
    if not base.is_dir():
        return []
    return sorted(p.relative_to(tree).as_posix() for p in base.rglob("*") if p.is_file() and not p.is_symlink())


def plan_install(
    tree: Path, manifest: Manifest, suite: str, fmt: PackageFormat, arch: Arch, packages: Sequence[Path]
) -> Install:
    """The packages of `arch` among `packages` and the tree files their installation needs."""
    key = manifest.repository.key_name
    if fmt is PackageFormat.DEB:
        entries = [read_deb(p, manifest.repository.component) for p in packages]
        entries = [e for e in entries if e.arch in (arch.value, "all")]
        if not entries:
            raise RepositoryError(f"no {arch.value} .deb to install among {', '.join(p.name for p in packages)}")
        files = [*_under(tree, f"dists/{suite}"), f"keys/{key}.gpg", *(e.filename for e in entries)]
        specs = tuple(f"{e.package}:{e.arch if e.arch != 'all' else arch.value}={e.version}" for e in entries)
        return Install(fmt, arch, specs, tuple(dict.fromkeys(files)))
    headers = [h for h in read_headers(list(packages)) if h.arch in (arch.rpm, "noarch")]
    if not headers:
        raise RepositoryError(f"no {arch.rpm} .rpm to install among {', '.join(p.name for p in packages)}")
    folder = f"rpm/{suite}/{arch.rpm}"
    files = [
        *_under(tree, f"{folder}/repodata"),
        f"keys/{key}.asc",
        *(f"{folder}/packages/{h.filename}" for h in headers),
    ]
    requires = run(["rpm", "-qp", "--nosignature", "--nodigest", "--requires", *map(str, packages)], what="rpm -qp")
    return Install(
        fmt,
        arch,
        tuple(f"{h.name}-{h.version}-{h.release}.{h.arch}" for h in headers),
        tuple(dict.fromkeys(files)),
        tuple(sorted({r.strip() for r in requires.splitlines() if r.strip()})),
    )


class Remote:
    """Commands on the job's machine: argument lists, status and combined output returned, not raised."""

    def __init__(self, session: SshSession, job: str) -> None:
        self.session = session
        self.job = job

    def call(self, argv: Sequence[str], *, timeout: float = 900.0) -> tuple[int, str]:
        # A fixed script: the arguments are positional parameters, never parsed by the shell.
        wrapped = ["sh", "-c", f'"$@" 2>&1; echo "{EXIT_MARK}$?"', "sh", *argv]
        out = self.session.run(wrapped, timeout=timeout)
        body, _, status = out.rstrip("\n").rpartition(EXIT_MARK)
        return int(status or 255), body

    def must(self, argv: Sequence[str], what: str, *, timeout: float = 900.0) -> str:
        status, out = self.call(argv, timeout=timeout)
        if status != 0:
            raise JobFailed(self.job, f"{what} exited {status}: {essence(out)}")
        return out

    def write(self, path: str, text: str) -> None:
        self.session.makedirs(str(Path(path).parent))
        with self.session.sftp.open(path, "w") as handle:
            handle.write(text.encode())


def essence(output: str, limit: int = 700) -> str:
    """apt's, dnf's or a command's error as one line: the lines that say what is wrong."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    telling = [
        line
        for line in lines
        if re.match(
            r"^(E:|W:|Err:|Error|error|Problem|- nothing provides|"
            r"\S+ : Depends:|\S+ : PreDepends:|\s*Depends:|dpkg:)",
            line,
        )
        or " : Depends: " in line
    ]
    chosen = telling or lines[-5:]
    return "; ".join(chosen)[-limit:] or "(no output)"


def upload(session: SshSession, tree: Path, files: Sequence[str], destination: str) -> int:
    """Copy `files` of the tree to `destination` on the machine, each checked by sha256."""
    sent = 0
    for relative in files:
        source = tree / relative
        if not source.is_file():
            raise RepositoryError(f"{relative} is not in the signed tree")
        session.put(source, f"{destination}/{relative}")
        sent += source.stat().st_size
    return sent


APT_HOME_FOLDERS = (
    "state/lists/partial",
    "cache/archives/partial",
    "etc/sources.list.d",
    "etc/trusted.gpg.d",
    "etc/preferences.d",
    "etc/apt.conf.d",
)
"""The folders apt needs in the home of `apt_home_options` (it creates none of them)."""


def apt_home_options(home: str | Path, arches: Sequence[str]) -> list[str]:
    """apt-get options that keep its state, cache and configuration (sources, keyrings) in `home`,
    for `arches` (the first native), without locks, retries or translations: an apt of its own
    beside the system's. The caller adds where the dpkg status is."""
    settings = [f"Dir::{name}={home}/{folder}" for name, folder in (("State", "state"), ("Cache", "cache"))]
    settings.append(f"Dir::Etc={home}/etc")
    settings += [
        f"Dir::Etc::{name}={home}/etc/{path}"
        for name, path in (
            ("SourceList", "sources.list"),
            ("SourceParts", "sources.list.d"),
            ("TrustedParts", "trusted.gpg.d"),
            ("Parts", "apt.conf.d"),
            ("PreferencesParts", "preferences.d"),
        )
    ]
    settings += [f"APT::Architecture={arches[0]}", "APT::Architectures::="]
    settings += [f"APT::Architectures::={arch}" for arch in arches]
    settings += ["Debug::NoLocking=1", "Acquire::Retries=0", "APT::Sandbox::User=root", "Acquire::Languages=none"]
    return [word for setting in settings for word in ("-o", setting)]


def apt_options(home: str, root: str, arch: Arch, native: str) -> list[str]:
    arches = [native] + ([arch.value] if arch.value != native else [])
    options = [
        *apt_home_options(home, arches),
        "-o",
        "Dir::State::status=/var/lib/dpkg/status",
        "-o",
        f"Dir::Log={home}/log",
        "-o",
        "APT::Install-Recommends=0",
        "-o",
        f"DPkg::Options::=--root={root}",
        "-o",
        "DPkg::Options::=--force-depends",
        "-o",
        f"DPkg::Options::=--log={home}/log/dpkg.log",
    ]
    return options


def install_deb(
    remote: Remote, work: str, install: Install, suite: str, component: str, key_name: str, native: str
) -> str:
    home, root, repo = f"{work}/apt", f"{work}/root", f"{work}/repo"
    for sub in (*APT_HOME_FOLDERS, "log"):
        remote.session.makedirs(f"{home}/{sub}")
    for sub in ("info", "updates", "triggers"):
        remote.session.makedirs(f"{root}/var/lib/dpkg/{sub}")
    remote.write(f"{root}/var/lib/dpkg/status", "")
    remote.write(f"{root}/var/lib/dpkg/available", "")
    remote.write(
        f"{home}/etc/sources.list", f"deb [signed-by={repo}/keys/{key_name}.gpg] file:{repo} {suite} {component}\n"
    )
    if install.arch.value != native:
        remote.must(["dpkg", f"--root={root}", "--add-architecture", install.arch.value], "dpkg --add-architecture")
    options = apt_options(home, root, install.arch, native)
    update = remote.must(["apt-get", *options, "update"], "apt-get update")
    # apt-get update exits 0 on some fetch or signature failures and only warns.
    if re.search(r"^(W: |E: |Err:)", update, re.MULTILINE):
        raise JobFailed(remote.job, f"apt-get update refused the signed tree: {essence(update)}")
    return remote.must(["apt-get", *options, "-y", "install", *install.specs], "apt-get install")


PROVIDES_SPEC = """Name: dropship-machine-provides
Version: 1
Release: 1
Summary: libraries of the machine an integration job runs on
License: none
BuildArch: noarch
{provides}
%description
What the machine's own library files provide, read by elfdeps on the machine.
%files
"""


def machine_provides(remote: Remote, install: Install) -> list[str]:
    """Of the packages' library requirements, those the machine's own files satisfy (elfdeps reads them)."""
    wanted = {m.group(1) for r in install.requires if (m := SONAME_REQ.match(r))}
    if not wanted:
        return []
    status, listing = remote.call(["/sbin/ldconfig", "-p"])
    paths = sorted(
        {
            line.split("=>")[-1].strip()
            for line in listing.splitlines()
            if "=>" in line and line.split()[0] in wanted and "x86-64" in line
        }
    )
    if status != 0 or not paths:
        return []
    found = remote.must(["/usr/lib/rpm/elfdeps", "--provides", *paths], "elfdeps --provides")
    provides = {line.strip() for line in found.splitlines()} & set(install.requires)
    if "rtld(GNU_HASH)" in install.requires and any(p.split("/")[-1].startswith("libc.so") for p in paths):
        provides.add("rtld(GNU_HASH)")  # glibc's dynamic linker hashes with GNU_HASH
    return sorted(provides)


def build_provides_rpm(provides: Sequence[str], folder: Path) -> Path:
    spec = folder / "provides.spec"
    spec.write_text(PROVIDES_SPEC.format(provides="".join(f"Provides: {p}\n" for p in provides)))
    run(
        [
            "rpmbuild",
            "--quiet",
            "--define",
            f"_topdir {folder}",
            "--define",
            f"_rpmdir {folder}/out",
            "--define",
            "_build_name_fmt %%{NAME}.rpm",
            "-bb",
            str(spec),
        ],
        what="rpmbuild (machine provides)",
    )
    return folder / "out" / "dropship-machine-provides.rpm"


def install_rpm(remote: Remote, work: str, install: Install, suite: str, key_name: str) -> str:
    root, repo, conf = f"{work}/root", f"{work}/repo", f"{work}/dnf"
    provides = machine_provides(remote, install)
    if provides:
        with tempfile.TemporaryDirectory(prefix="dropship-provides-") as tmp:
            rpm = build_provides_rpm(provides, Path(tmp))
            remote.session.put(rpm, f"{conf}/dropship-machine-provides.rpm")
        remote.session.makedirs(root)
        # A local package of the machine's own libraries, not from the release: no signature to check.
        remote.must(
            ["rpm", f"--root={root}", "--nosignature", "-i", f"{conf}/dropship-machine-provides.rpm"],
            "rpm -i (machine provides)",
        )
    remote.write(
        f"{conf}/repos/release.repo",
        "\n".join(
            [
                "[dropship-release]",
                "name=the release under test",
                f"baseurl=file://{repo}/rpm/{suite}/{install.arch.rpm}",
                "enabled=1",
                "gpgcheck=1",
                "repo_gpgcheck=1",
                f"gpgkey=file://{repo}/keys/{key_name}.asc",
                "",
            ]
        ),
    )
    remote.write(
        f"{conf}/dnf.conf",
        "\n".join(
            [
                "[main]",
                "gpgcheck=1",
                "repo_gpgcheck=1",
                f"reposdir={conf}/repos",
                f"cachedir={conf}/cache",
                "install_weak_deps=0",
                "",
            ]
        ),
    )
    return remote.must(
        [
            "dnf",
            "-y",
            "--config",
            f"{conf}/dnf.conf",
            "--installroot",
            root,
            "--setopt",
            f"reposdir={conf}/repos",
            "--releasever",
            "12",
            "--forcearch",
            install.arch.rpm,
            "--disablerepo",
            "*",
            "--enablerepo",
            "dropship-release",
            "install",
            *install.specs,
        ],
        "dnf install",
    )


def run_command(remote: Remote, work: str, command: Sequence[str], timeout: float) -> str:
    """The job's command with the root's binaries and libraries first on PATH and LD_LIBRARY_PATH."""
    root = f"{work}/root"
    path = (
        ":".join(f"{root}{d}" for d in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")) + ":" + BASE_PATH
    )
    libs = ":".join(f"{root}{d}" for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib"))
    argv = [
        "timeout",
        "--kill-after=5",
        str(int(timeout)),
        "env",
        f"PATH={path}",
        f"LD_LIBRARY_PATH={libs}",
        f"DROPSHIP_INSTALL_ROOT={root}",
        *command,
    ]
    status, out = remote.call(argv, timeout=timeout + 30)
    if status != 0:
        what = f"timed out after {int(timeout)} s" if status == 124 else f"exited {status}"
        raise JobFailed(remote.job, f"command {shlex.join(command)} {what}: {essence(out)}")
    return out


def run_integration(
    session: SshSession,
    *,
    job: str,
    work: str,
    tree: Path,
    install: Install,
    suite: str,
    component: str,
    key_name: str,
    command: Sequence[str],
    timeout: float,
) -> tuple[JobOutcome, str]:
    """Upload, install (signatures checked), run; the outcome and what the command printed (or the install's
    last lines when it cannot run here), for the job's log. `JobFailed` names what failed and why."""
    started = time.monotonic()
    remote = Remote(session, job)
    upload(session, tree, install.files, f"{work}/repo")
    machine_arch = remote.must(["uname", "-m"], "uname").strip()
    native = UNAME.get(machine_arch, machine_arch)
    if install.format is PackageFormat.DEB:
        log = install_deb(remote, work, install, suite, component, key_name, native)
    else:
        log = install_rpm(remote, work, install, suite, key_name)
    outcome = JobOutcome(job, "integration", "passed", detail=f"installed {', '.join(install.specs)}")
    if native != install.arch.value:
        outcome.status = "installed"
        outcome.detail += (
            f"; not executed: a {machine_arch} machine cannot run {install.arch.value} binaries "
            f"(needs a {install.arch.value} machine)"
        )
        output = "\n".join(log.strip().splitlines()[-10:])
    else:
        output = run_command(remote, work, command, timeout).strip()[-2000:]
    outcome.seconds = round(time.monotonic() - started, 3)
    return outcome, output


def job_user_data(*, host_private_key: str, host_public_key: str, authorized_key: str, work_dir: str) -> str:
    """A fresh machine's first boot: the pinned host key and our login key, no Prefect worker.

    The same paths as a build machine's user_data (dropship/machines/userdata.py),
    so a local machine's sshd finds them under DROPSHIP_MACHINE_ROOT.
    """
    check_public_keys(host_public_key, authorized_key)
    files = {
        "/etc/ssh/ssh_host_ed25519_key": host_private_key,
        "/etc/ssh/ssh_host_ed25519_key.pub": host_public_key,
        "/etc/dropship/authorized_keys": authorized_key,
    }
    script = [
        "#!/bin/sh",
        "# dropship integration-job machine (cloud-init user_data), generated.",
        "set -eu",
        'ROOT="${DROPSHIP_MACHINE_ROOT:-}"',
        "umask 077",
        f'mkdir -p "$ROOT/etc/ssh" "$ROOT/etc/dropship" "$ROOT"{shlex.quote(work_dir)}',
    ]
    script += [heredoc(path, content).rstrip("\n") for path, content in files.items()]
    script += [
        'if [ -z "$ROOT" ]; then',
        "  mkdir -p /root/.ssh && cat /etc/dropship/authorized_keys >> /root/.ssh/authorized_keys",
        "  rm -f /etc/ssh/ssh_host_rsa_key* /etc/ssh/ssh_host_ecdsa_key*",
        "  systemctl restart ssh 2>/dev/null || service ssh restart 2>/dev/null || true",
        "fi",
        "",
    ]
    return "\n".join(script)


def create_job_machine(
    provider: Provider,
    manifest: Manifest,
    job: str,
    arch: Arch,
    *,
    run_id: str,
    short_run_id: str,
    client_public_key: str,
    client_private_key: str,
    ssh_timeout: float = 300.0,
) -> Machine:
    """A new machine for one job, tagged with the run (so teardown and the reaper find it).

    A droplet boots the stock image with the bootstrap user_data (our host key,
    the run's SSH key through DigitalOcean's `ssh_keys`) and is returned only
    once it answers with its pinned host key, as build droplets are.
    """
    host_key = generate_keypair(f"dropship-host-job-{job}")
    defaults = manifest.defaults
    droplet = provider.name == "digitalocean"
    if droplet:
        user_data = render_bootstrap(host_private_key=host_key.private_openssh, host_public_key=host_key.public_line)
    else:
        user_data = job_user_data(
            host_private_key=host_key.private_openssh,
            host_public_key=host_key.public_line,
            authorized_key=client_public_key,
            work_dir=WORK_DIR,
        )
    request = MachineRequest(
        name=f"{manifest.project.name}-job-{job}-{short_run_id}"[:63].rstrip("-"),
        tags=(run_tag(run_id), f"dropship-job-{job}", f"dropship-arch-{arch.value}"),
        size=defaults.size,
        image=defaults.image,
        region=defaults.region,
        user_data=user_data,
        host_public_key=host_key.public_line,
        authorized_key=client_public_key,
    )
    machine = provider.create(request)
    if droplet:
        try:
            connect_pinned(machine, client_private_key, timeout=ssh_timeout).close()
        except BaseException:
            provider.delete(machine.id)
            raise
    return machine
