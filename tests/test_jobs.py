"""[[jobs]], [[registries]] and language packages in the manifest; the pieces of
integration jobs and registry publication that need no Prefect."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from dropship.errors import MachineError, ManifestError, RegistryError
from dropship.integration import essence, job_user_data
from dropship.jobs import (
    JobKind,
    LanguageKind,
    build_globs,
    integration_targets,
    jobs_of,
)
from dropship.manifest import parse_manifest
from dropship.registries import inspect

EXAMPLE_WHEEL = Path(__file__).resolve().parents[1] / "examples" / "hello" / "python" / "build_wheel.py"

BASE: dict[str, Any] = {
    "project": {"name": "hello"},
    "targets": [
        {"name": "amd64-deb", "arch": "amd64", "format": "deb", "build": ["make"], "artifacts": ["out/*.deb"]},
        {"name": "amd64-rpm", "arch": "amd64", "format": "rpm", "build": ["make"], "artifacts": ["out/*.rpm"]},
        {"name": "arm64-deb", "arch": "arm64", "format": "deb", "build": ["make"], "artifacts": ["out/*.deb"]},
        {
            "name": "wheel",
            "arch": "amd64",
            "build": ["python3", "w.py"],
            "packages": [{"kind": "wheel", "glob": "dist/*.whl", "registry": "pypi"}],
        },
    ],
    "registries": [{"name": "pypi", "kind": "pypi", "url": "http://127.0.0.1:8080/", "credentials": "creds"}],
    "jobs": [
        {"name": "unit", "kind": "unit", "command": ["make", "check"]},
        {"name": "install-deb", "kind": "integration", "arch": "amd64", "needs": ["amd64-deb"], "command": ["hello"]},
        {"name": "install-arm64", "kind": "integration", "arch": "arm64", "command": ["hello"]},
        {"name": "approve", "kind": "manual", "classes": ["stable"], "timeout": 600},
        {"name": "docs", "kind": "docs", "command": ["make", "docs"], "output": "site"},
    ],
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is None:
        del node[int(last) if last.isdigit() else last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return data


def test_jobs_registries_and_packages_parse() -> None:
    manifest = parse_manifest(BASE)
    assert [j.kind for j in manifest.jobs] == [
        JobKind.UNIT,
        JobKind.INTEGRATION,
        JobKind.INTEGRATION,
        JobKind.MANUAL,
        JobKind.DOCS,
    ]
    assert integration_targets(manifest, manifest.jobs[1]) == ["amd64-deb"]
    assert integration_targets(manifest, manifest.jobs[2]) == ["arm64-deb"], (
        "no needs: every package target of the arch"
    )
    assert [j.name for j in jobs_of(manifest, JobKind.MANUAL, "stable")] == ["approve"]
    assert jobs_of(manifest, JobKind.MANUAL, "development") == []
    assert manifest.target("wheel").format is None
    assert build_globs(manifest.target("wheel")) == ["dist/*.whl"]
    assert manifest.registries[0].classes == ["stable", "extra"]


@pytest.mark.parametrize(
    ("path", "value", "field", "problem"),
    [
        ("jobs.1.kind", "smoke", "jobs[1].kind", "expected one of"),
        ("jobs.1.needs", ["nope"], "jobs[1].needs", "unknown target 'nope'"),
        ("jobs.1.needs", ["amd64-deb", "amd64-rpm"], "jobs[1].needs", "one format"),
        ("jobs.1.needs", ["arm64-deb"], "jobs[1].needs", "not a deb/rpm target of arch amd64"),
        ("jobs.1.arch", None, "jobs[1].arch", "required for an integration job"),
        ("jobs.1.command", None, "jobs[1].command", "required for a integration job"),
        ("jobs.1.command", "hello --version", "jobs[1].command", "list"),
        ("jobs.2.arch", "riscv", "jobs[2].arch", "'amd64' or 'arm64'"),
        ("jobs.0.arch", "amd64", "jobs[0].arch", "unit jobs run on the orchestrator"),
        ("jobs.3.command", ["true"], "jobs[3].command", "a manual job is an approval"),
        ("jobs.3.timeout", 0, "jobs[3].timeout", "greater than or equal to 1"),
        ("jobs.3.classes", ["nightly"], "jobs[3].classes.0", "'stable', 'extra' or 'development'"),
        ("jobs.4.output", None, "jobs[4].output", "required for a docs job"),
        ("jobs.4.output", "../site", "jobs[4].output", "inside the source tree"),
        ("jobs.4.name", "unit", "jobs[4].name", "duplicate job name 'unit'"),
        ("targets.3.packages.0.registry", "npmjs", "targets[3].packages[0].registry", "unknown registry 'npmjs'"),
        ("targets.3.packages.0.kind", "npm", "targets[3].packages[0].registry", "a npm goes to a npm registry"),
        ("targets.3.packages.0.glob", "/abs/*.whl", "targets[3].packages.0.glob", "inside the source tree"),
        (
            "targets.3.packages.0",
            {"kind": "crate", "glob": "out/*.crate"},
            "targets[3].packages[0].kind",
            "cargo registries are not supported",
        ),
        ("targets.3.packages", None, "targets[3].format", "required (deb or rpm) unless the target declares packages"),
        ("targets.0.artifacts", None, "targets[0].artifacts", "a deb target needs artifact globs"),
        ("registries.0.kind", "cargo", "registries[0].kind", "cargo registries are not supported yet"),
        ("registries.0.kind", "npm", "targets[3].packages[0].registry", "a wheel goes to a pypi registry, not npm"),
        (
            "registries.0",
            {"name": "pypi", "kind": "npm", "url": "http://h/", "index": "http://h/simple/", "credentials": "c"},
            "registries[0].index",
            "a simple index URL is for pypi registries only",
        ),
        ("registries.0.url", "ftp://x", "registries.0.url", "does not match"),
        ("registries.0.credentials", None, "registries.0.credentials", "required field is missing"),
    ],
)
def test_bad_jobs_name_the_field(path: str, value: Any, field: str, problem: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(with_change(path, value), "dropship.toml")
    assert caught.value.field.replace("[", ".").replace("]", "") == field.replace("[", ".").replace("]", ""), str(
        caught.value
    )
    assert problem in caught.value.problem, str(caught.value)


def test_essence_keeps_what_apt_says_is_wrong() -> None:
    output = (
        "Reading package lists...\nBuilding dependency tree...\nSome packages could not be installed.\n"
        "The following packages have unmet dependencies:\n"
        " hello : Depends: libdropship-missing (>= 1) but it is not installable\n"
        "E: Unable to correct problems, you have held broken packages.\n"
    )
    assert essence(output) == (
        "hello : Depends: libdropship-missing (>= 1) but it is not installable; "
        "E: Unable to correct problems, you have held broken packages."
    )
    assert essence("just\nsome\noutput") == "just; some; output"
    assert essence("") == "(no output)"


def test_job_user_data_writes_keys_and_starts_no_worker(tmp_path: Path) -> None:
    script = job_user_data(
        host_private_key="PRIVATE\n",
        host_public_key="ssh-ed25519 AAAA host",
        authorized_key="ssh-ed25519 BBBB me",
        work_dir="/var/lib/dropship/work",
    )
    subprocess.run(["sh", "-c", script], env={**os.environ, "DROPSHIP_MACHINE_ROOT": str(tmp_path)}, check=True)
    assert (tmp_path / "etc/ssh/ssh_host_ed25519_key").read_text() == "PRIVATE\n"
    assert (tmp_path / "etc/dropship/authorized_keys").read_text() == "ssh-ed25519 BBBB me\n"
    assert (tmp_path / "var/lib/dropship/work").is_dir()
    assert "prefect" not in script
    with pytest.raises(MachineError, match="single lines"):
        job_user_data(host_private_key="x", host_public_key="a\nb", authorized_key="c", work_dir="/w")


def build_wheel(out: Path, version: str = "0.1.0", epoch: str = "1700000000") -> Path:
    subprocess.run(
        [sys.executable, str(EXAMPLE_WHEEL), str(out)],
        check=True,
        capture_output=True,
        env={**os.environ, "DROPSHIP_VERSION": version, "SOURCE_DATE_EPOCH": epoch},
    )
    (wheel,) = out.glob("*.whl")
    return wheel


def test_example_wheel_is_reproducible_and_inspected(tmp_path: Path) -> None:
    first, second = build_wheel(tmp_path / "a"), build_wheel(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    assert inspect(first, LanguageKind.WHEEL) == ("hello-dropship", "0.1.0")
    assert build_wheel(tmp_path / "c", "1.5.0~rc1").name == "hello_dropship-1.5.0rc1-py3-none-any.whl"
    assert build_wheel(tmp_path / "d", "0~dev20261122181500.gabc1234").name.startswith(
        "hello_dropship-0.dev20261122181500-"
    )


def test_malformed_wheels_are_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "hello_dropship-0.1.0-py3-none-any.whl"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(RegistryError, match="is not a well-formed wheel"):
        inspect(bogus, LanguageKind.WHEEL)
    renamed = tmp_path / "other-0.1.0-py3-none-any.whl"
    renamed.write_bytes(build_wheel(tmp_path / "w").read_bytes())
    with pytest.raises(RegistryError, match="file name does not start with hello_dropship-0.1.0-"):
        inspect(renamed, LanguageKind.WHEEL)
    empty = tmp_path / "x-1-py3-none-any.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("x/__init__.py", "")
    with pytest.raises(RegistryError, match=r"no single \*\.dist-info/METADATA"):
        inspect(empty, LanguageKind.WHEEL)


# --- integration on a real local machine, without Prefect ---------------------


def _signed_tree(tmp_path: Path, packages: list[Path], signing_key: str) -> tuple[Any, Path]:
    from dropship.repos.tree import sign_release
    from dropship.signing import Signer

    manifest = parse_manifest(
        {
            "project": {"name": "hello"},
            "targets": [
                {"name": "arm64-deb", "arch": "arm64", "format": "deb", "build": ["x"], "artifacts": ["*.deb"]},
                {"name": "arm64-rpm", "arch": "arm64", "format": "rpm", "build": ["x"], "artifacts": ["*.rpm"]},
            ],
            "repository": {"key_name": "hello-release"},
        }
    )
    tree = tmp_path / "tree"
    tree.mkdir()
    with Signer([signing_key]) as signer:
        sign_release(
            tree,
            manifest,
            ["stable"],
            [p for p in packages if p.suffix == ".deb"],
            [p for p in packages if p.suffix == ".rpm"],
            signer,
            base_url="http://127.0.0.1:9/",
        )
    return manifest, tree


def _integrate(tmp_path: Path, manifest: Any, tree: Path, install: Any, job: str, command: list[str]) -> Any:
    """`job` run on a fresh arm64 job machine (local) against `tree`; the machine is deleted after.

    Returns (the outcome, whether hello landed in the job's isolated root as an AArch64 ELF, machines left)."""
    from dropship.collect import endpoint
    from dropship.integration import create_job_machine, run_integration
    from dropship.machines.local import LocalProvider
    from dropship.manifest import Arch
    from dropship.ssh import SshSession, write_keypair

    provider = LocalProvider(tmp_path / "local")
    pair = write_keypair(tmp_path / "ssh" / "id", "test")
    machine = create_job_machine(
        provider,
        manifest,
        job,
        Arch.ARM64,
        run_id=f"t-{job}",
        short_run_id=job[:4],
        client_public_key=pair.public_line,
        client_private_key=pair.private_openssh,
    )
    try:
        with SshSession(endpoint(machine), pair.private_openssh) as session:
            outcome, _output = run_integration(
                session,
                job=job,
                work=machine.work_dir,
                tree=tree,
                install=install,
                suite="stable",
                component="main",
                key_name="hello-release",
                command=command,
                timeout=60,
            )
        hello = Path(machine.work_dir) / "root/usr/bin/hello"
        arm64 = hello.is_file() and hello.read_bytes()[18] == 0xB7  # an AArch64 ELF (e_machine 183)
    finally:
        provider.delete(machine.id)
    return outcome, arm64, provider.list()


@pytest.mark.parametrize("fmt", ["deb", "rpm"])
def test_arm64_job_installs_with_signatures_checked_but_cannot_execute_here(
    tmp_path: Path, example_packages: dict[str, dict[str, Path]], signing_key: str, fmt: str
) -> None:
    from dropship.integration import plan_install
    from dropship.manifest import Arch, PackageFormat

    package = example_packages["0.1.0"][f"arm64-{fmt}"]
    manifest, tree = _signed_tree(tmp_path, [package], signing_key)
    signed = next(tree.rglob(package.name))
    install = plan_install(tree, manifest, "stable", PackageFormat(fmt), Arch.ARM64, [signed])
    outcome, arm64, left = _integrate(tmp_path, manifest, tree, install, "install-arm64", ["hello", "--version"])
    assert arm64, "installed into the isolated root, an AArch64 ELF"
    assert outcome.status == "installed"
    assert "not executed: a x86_64 machine cannot run arm64 binaries" in outcome.detail
    assert left == []


def test_tampered_tree_is_refused_by_apt(
    tmp_path: Path, example_packages: dict[str, dict[str, Path]], signing_key: str, other_key: str
) -> None:
    """The signature check is on: a tree whose InRelease another key signed does not install."""
    from dropship.errors import JobFailed
    from dropship.integration import plan_install
    from dropship.manifest import Arch, PackageFormat
    from dropship.signing import Signer

    package = example_packages["0.1.0"]["arm64-deb"]
    manifest, tree = _signed_tree(tmp_path, [package], signing_key)
    release = tree / "dists/stable/Release"
    with Signer([other_key]) as signer:  # re-sign the index with a key the keyring does not hold
        (tree / "dists/stable/InRelease").write_bytes(signer.clearsign(release.read_bytes()))
    (tree / "dists/stable/Release.gpg").unlink(missing_ok=True)
    install = plan_install(tree, manifest, "stable", PackageFormat.DEB, Arch.ARM64, [next(tree.rglob(package.name))])
    with pytest.raises(JobFailed) as caught:
        _integrate(tmp_path, manifest, tree, install, "tampered", ["hello"])
    message = str(caught.value)
    assert message.startswith("job tampered: apt-get update ") and "\n" not in message
    assert "NO_PUBKEY" in message or "is not signed" in message, message
