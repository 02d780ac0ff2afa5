"""Build containers (dropship/containers.py): the image reference, the block's registry, how the
container runs, and the digest a tag resolves to in a real htpasswd registry (`tests/registry.py`),
which the content hash covers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from dropship.cache import content_hashes
from dropship.containers import (
    ImageRef,
    RegistryValue,
    check_block_registry,
    container_environment,
    parse_image,
    pin_build_images,
    refuse_loopback_for_droplets,
    resolve,
    run_spec,
)
from dropship.emulator.dockerd import DockerDaemon
from dropship.errors import ImageError
from dropship.manifest import parse_manifest
from dropship.oci import RegistryAuth, Skopeo
from dropship.oci_registry import LocalRegistry
from tests.registry import push_image

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("registry.example.org/build/debian:12", ImageRef("registry.example.org", "build/debian", "12", None)),
        ("127.0.0.1:5000/tools", ImageRef("127.0.0.1:5000", "tools", "latest", None)),
        (f"127.0.0.1:5000/tools@{DIGEST}", ImageRef("127.0.0.1:5000", "tools", None, DIGEST)),
        (f"reg.example.org/a/b:v1.2@{DIGEST}", ImageRef("reg.example.org", "a/b", "v1.2", DIGEST)),
    ],
)
def test_image_references_parse(reference: str, expected: ImageRef) -> None:
    image = parse_image(reference)
    assert image == expected
    assert image.pinned(DIGEST) == f"{expected.registry}/{expected.path}@{DIGEST}"


@pytest.mark.parametrize(
    "reference",
    [
        "debian:12",  # no registry host: Docker Hub is not a registry the release engineer controls
        "registry.example.org/Debian:12",  # uppercase name
        "registry.example.org/debian:",  # empty tag
        "registry.example.org/debian@sha256:abc",  # short digest
        "registry.example.org/debian:12 ; rm -rf /",
        "registry.example.org/" + "a" * 600,
    ],
)
def test_malformed_references_are_refused_in_one_line(reference: str) -> None:
    with pytest.raises(ImageError) as info:
        parse_image(reference)
    message = str(info.value)
    assert "\n" not in message and "is not an image reference" in message and "registry-host" in message


def test_a_block_for_another_registry_is_refused_before_its_password_is_used() -> None:
    check_block_registry("b", "https://127.0.0.1:5000/", "127.0.0.1:5000", "targets[0].container_credentials")
    with pytest.raises(ImageError, match=r"block 'b' is for registry registry.other.org, but targets\[0\]"):
        check_block_registry("b", "registry.other.org", "127.0.0.1:5000", "targets[0].container_credentials")


@pytest.mark.parametrize(
    ("registry_url", "registry"),
    [
        ("https://index.docker.io/v1/", "docker.io"),  # what `docker login` writes for Docker Hub
        ("registry-1.docker.io", "index.docker.io"),
        ("docker.io", "registry.hub.docker.com"),
        ("HTTPS://Registry.Example.org:443/", "registry.example.org"),
        ("registry.example.org/v2/", "registry.example.org:443"),
        ("http://127.0.0.1:5000", "127.0.0.1:5000"),
        ("https://127.0.0.1:5000/v1/", "127.0.0.1:5000"),
        ("http://registry.example.org:80", "registry.example.org"),
    ],
)
def test_a_block_for_the_same_registry_written_another_way_is_accepted(registry_url: str, registry: str) -> None:
    check_block_registry("b", registry_url, registry, "targets[0].container_credentials")


@pytest.mark.parametrize(
    ("registry_url", "registry"),
    [
        ("registry.example.org:5000", "registry.example.org"),  # another port
        ("https://registry.example.org:80", "registry.example.org"),  # 80 is not https's default
        ("https://evil.example.org/registry.example.org", "registry.example.org"),  # the host is not in the path
        ("registry.example.org.evil.org", "registry.example.org"),
        ("https://index.docker.io/v1/", "ghcr.io"),
        ("", "registry.example.org"),
    ],
)
def test_a_block_for_another_registry_is_refused_however_it_is_written(registry_url: str, registry: str) -> None:
    with pytest.raises(ImageError, match=r"^block 'b' is for registry .*, but targets\[0\]\.container_credentials"):
        check_block_registry("b", registry_url, registry, "targets[0].container_credentials")


def test_the_container_gets_the_declared_environment_and_the_machines_marker(tmp_path: Path) -> None:
    declared = {"HOME": str(tmp_path / "home"), "DROPSHIP_VERSION": "1.0.0", "SOURCE_DATE_EPOCH": "1700000000"}
    env = container_environment(declared, "abc123")
    assert env == {**declared, "DROPSHIP_MACHINE_ID": "abc123"}
    spec = run_spec(source=tmp_path / "src", home=tmp_path / "home", env=env, identity=(998, 997), target="t")
    assert spec["network_mode"] == "host" and spec["working_dir"] == str(tmp_path / "src")
    assert spec["volumes"][str(tmp_path / "src")] == {"bind": str(tmp_path / "src"), "mode": "rw"}
    assert spec["user"] == "998:997"
    assert "user" not in run_spec(source=tmp_path, home=tmp_path, env=env, identity=None, target="t")


MANIFEST = {
    "project": {"name": "p"},
    "targets": [
        {
            "name": "in-box",
            "arch": "amd64",
            "format": "deb",
            "build": ["make"],
            "artifacts": ["*.deb"],
            "container": "127.0.0.1:5000/tools:1",
            "setup": ["docker.io"],
        },
        {"name": "plain", "arch": "amd64", "format": "deb", "build": ["make"], "artifacts": ["*.deb"]},
    ],
}


def test_the_hash_covers_the_image_by_digest_and_only_for_container_targets() -> None:
    manifest = parse_manifest(MANIFEST)
    files = [("Makefile", "1" * 40)]
    first = content_hashes(manifest, files, version=None, containers={"in-box": f"127.0.0.1:5000/tools@{DIGEST}"})
    same = content_hashes(manifest, files, version=None, containers={"in-box": f"127.0.0.1:5000/tools@{DIGEST}"})
    moved = content_hashes(
        manifest, files, version=None, containers={"in-box": "127.0.0.1:5000/tools@sha256:" + "cd" * 32}
    )
    assert first["in-box"].digest == same["in-box"].digest != moved["in-box"].digest
    assert first["plain"].digest == moved["plain"].digest
    without = dict(MANIFEST, targets=[MANIFEST["targets"][1]])  # type: ignore[index]
    assert content_hashes(parse_manifest(without), files, version=None)["plain"].digest == first["plain"].digest


@pytest.mark.parametrize("registry", ["127.0.0.1:5000", "localhost:5000", "127.0.2.7"])
def test_a_loopback_build_image_is_refused_for_droplets_before_any_machine(registry: str, tmp_path: Path) -> None:
    """A droplet pulls its build image itself: on a loopback registry it would look on its own loopback
    (in the emulator as on DigitalOcean). The plan stage and `dropship check` refuse it in one line with
    what to do; a named registry, and any registry on local machines, pass."""
    from datetime import UTC, datetime

    from dropship.checks import FAILED, check_build_images
    from dropship.plan import make_plan

    targets = [dict(MANIFEST["targets"][0], container=f"{registry}/tools:1"), MANIFEST["targets"][1]]  # type: ignore[index]
    manifest = parse_manifest(dict(MANIFEST, targets=targets))
    with pytest.raises(ImageError) as refused:
        refuse_loopback_for_droplets(manifest, "in-box", "digitalocean")
    message = str(refused.value)
    assert message.startswith(f"targets[0].container is on {registry}, a loopback address")
    assert "registry the droplets reach by name" in message and "\n" not in message
    refuse_loopback_for_droplets(manifest, "plain", "digitalocean")  # no container: nothing to pull
    refuse_loopback_for_droplets(manifest, "in-box", "local")  # local machines share the loopback
    named = parse_manifest(dict(MANIFEST, targets=[dict(targets[0], container="registry.example.org/tools:1")]))
    refuse_loopback_for_droplets(named, "in-box", "digitalocean")

    (check,) = check_build_images(manifest, ["in-box"], {}, "digitalocean")  # before the block is looked up
    assert check.status == FAILED and check.detail == message
    (local,) = check_build_images(manifest, ["in-box"], {}, "local")
    assert "loopback" not in local.line()

    manifest_file = tmp_path / "dropship.toml"
    manifest_file.write_text(
        '[project]\nname = "p"\n[[targets]]\nname = "in-box"\narch = "amd64"\nformat = "deb"\n'
        f'build = ["make"]\nartifacts = ["*.deb"]\ncontainer = "{registry}/tools:1"\nsetup = ["docker.io"]\n'
    )
    with pytest.raises(ImageError, match=r"^targets\[0\]\.container is on "):
        make_plan(
            manifest_file,
            tag=None,
            ref="main",
            targets=None,
            workdir=tmp_path / "work",
            run_id="r1",
            started=datetime.now(UTC),
            provider="digitalocean",
        )
    assert not (tmp_path / "work").exists()  # refused before the source is even archived


@pytest.mark.skipif(os.geteuid() != 0, reason="dockerd needs root")
def test_a_moved_tag_resolves_to_its_new_digest_and_changes_the_hash(
    registry: LocalRegistry, dockerd: DockerDaemon
) -> None:
    """Two images pushed to one tag in turn: `resolve` (skopeo, the block's credentials) follows the tag,
    and the content hash with it; a digest reference resolves to itself; a missing tag is one line."""
    repository = registry.repository("unit/build-tools")
    first = push_image(dockerd, registry, repository, "1", {"/tool": "#!/bin/sh\necho one\n"})
    manifest = parse_manifest({**MANIFEST, "targets": [{**MANIFEST["targets"][0], "container": f"{repository}:1"}]})
    files = [("Makefile", "1" * 40)]

    def hashed() -> tuple[str, str]:
        image = parse_image(f"{repository}:1")
        with Skopeo(registry.auth) as skopeo:
            digest = resolve(skopeo, image, "targets[0].container")
        pinned = {"in-box": image.pinned(digest)}
        return digest, content_hashes(manifest, files, version=None, containers=pinned)["in-box"].digest

    digest, before = hashed()
    assert digest == first
    assert hashed() == (digest, before)  # unchanged tag: the same hash, reused
    second = push_image(dockerd, registry, repository, "1", {"/tool": "#!/bin/sh\necho two\n"})
    assert second != first
    moved, after = hashed()
    assert moved == second and after != before
    with Skopeo(registry.auth) as skopeo:
        assert resolve(skopeo, parse_image(f"{repository}@{first}"), "f") == first  # the old digest is still there
        with pytest.raises(ImageError) as info:
            resolve(skopeo, parse_image(f"{repository}:nope"), "targets[0].container")
    message = str(info.value)
    assert message == (
        f"{repository}:nope is not in the registry {registry.host} (no such tag): push it there or fix "
        "targets[0].container"
    )
    with Skopeo(RegistryAuth(registry.host, registry.username, "wrong-pw-7Hk")) as skopeo:
        with pytest.raises(ImageError) as info:
            resolve(skopeo, parse_image(f"{repository}:1"), "targets[0].container")
    assert "DockerRegistryCredentials" in str(info.value) and "wrong-pw-7Hk" not in str(info.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="dockerd needs root")
def test_the_plan_and_the_check_pin_a_build_image_alike(registry: LocalRegistry, dockerd: DockerDaemon) -> None:
    """`pin_build_images` (the plan stage) and `check_build_images` (`dropship check`) are one resolution:
    the same digest, only for targets with a container; a missing block is one line naming the fix."""
    from dropship.checks import check_build_images

    repository = registry.repository("unit/pinned-tools")
    digest = push_image(dockerd, registry, repository, "1", {"/tool": "#!/bin/sh\n"})
    manifest = parse_manifest(
        {**MANIFEST, "targets": [{**MANIFEST["targets"][0], "container": f"{repository}:1"}, MANIFEST["targets"][1]]}
    )  # type: ignore[index]
    block = manifest.target("in-box").container_credentials
    registries = {block: RegistryValue(f"https://{registry.host}/v1/", registry.username, registry.password)}
    assert pin_build_images(manifest, ["in-box", "plain"], registries) == {"in-box": f"{repository}@{digest}"}
    (check,) = check_build_images(manifest, ["in-box", "plain"], registries)
    assert check.ok and check.detail == f"{repository}:1 is {digest[:19]}"
    with pytest.raises(ImageError) as info:
        pin_build_images(manifest, ["in-box"], {})
    assert str(info.value).startswith(
        f"no DockerRegistryCredentials block {block!r} (targets[0].container_credentials)"
    )


def test_a_machine_without_docker_fails_the_build_in_one_line(tmp_path: Path) -> None:
    from dropship.containers import BuildDocker
    from dropship.errors import BuildFailed

    with pytest.raises(BuildFailed) as info, BuildDocker(tmp_path, "amd64-deb", search_path=str(tmp_path)):
        pass
    assert str(info.value) == (
        'target amd64-deb: a build container needs Docker, and dockerd is not on the machine: add "docker.io" '
        "to the target's setup (or use an image that has it)"
    )
    assert not (tmp_path / "dockerd").exists()


# --- the runner on a machine (tasks/containers.py): prefect-docker's tasks on a dockerd of the build's own ---

TOOL_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *version = getenv("DROPSHIP_VERSION");
    printf("version=%s path=%s\n", version ? version : "-", getenv("PATH") ? getenv("PATH") : "-");
    fflush(stdout);
    if (argc > 2 && strcmp(argv[1], "sleep") == 0) sleep(atoi(argv[2]));
    return argc > 2 && strcmp(argv[1], "exit") == 0 ? atoi(argv[2]) : 0;
}
"""


@pytest.fixture(scope="module")
def tool_image(
    registry: LocalRegistry, dockerd: DockerDaemon, prefect_server: str, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A FROM scratch image with one static program, pushed; returns its reference pinned by digest."""
    import subprocess

    from prefect_docker.credentials import DockerRegistryCredentials

    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    folder = tmp_path_factory.mktemp("tool")
    (folder / "tool.c").write_text(TOOL_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(folder / "tool"), str(folder / "tool.c")], check=True)
    repository = registry.repository("unit/runner-tool")
    digest = push_image(dockerd, registry, repository, "1", {"/tool": (folder / "tool").read_bytes()})
    DockerRegistryCredentials(username=registry.username, password=registry.password, registry_url=registry.host).save(
        "runner-registry", overwrite=True
    )
    return f"{repository}@{digest}"


def _run_in(reference: str, workspace: Path, command: list[str], timeout: float = 60) -> str:
    from prefect import flow

    from tasks.containers import ContainerRunner

    source, home = workspace / "src", workspace / "home"
    source.mkdir(parents=True, exist_ok=True)
    home.mkdir(exist_ok=True)

    @flow(name="runner-test")
    def run() -> str:
        runner = ContainerRunner(target="t", workspace=workspace, reference=reference, credentials="runner-registry")
        env = {"HOME": str(home), "DROPSHIP_VERSION": "1.2.3", "DROPSHIP_TARGET": "t"}
        return runner(command, cwd=source, env=env, timeout=timeout, identity=None)

    return run()


def test_the_runner_pulls_by_digest_and_runs_the_command_with_the_declared_environment(
    tool_image: str, tmp_path: Path
) -> None:
    output = _run_in(tool_image, tmp_path, ["/tool"])
    # DROPSHIP_VERSION as given; PATH is Docker's default for an image that sets none, not the worker's
    assert output.strip() == "version=1.2.3 path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert not (tmp_path / "dockerd").exists()


@pytest.mark.parametrize(
    ("command", "timeout", "expected"),
    [
        (["/tool", "exit", "3"], 60, "build of t in {repository} failed with exit code 3: /tool exit 3"),
        (["make", "deb"], 60, "build of t failed with exit code 127: make deb\nmake: not found in {repository}"),
        (["/tool", "sleep", "60"], 3, "build of t failed with exit code -1: /tool sleep 60"),
    ],
    ids=["exit-code", "program-missing", "timeout"],
)
def test_a_failing_build_in_the_container_fails_as_it_would_on_the_machine(
    tool_image: str, tmp_path: Path, command: list[str], timeout: float, expected: str
) -> None:
    from dropship.dockerd import short_folder
    from dropship.errors import CommandError

    with pytest.raises(CommandError) as info:
        _run_in(tool_image, tmp_path, command, timeout=timeout)
    assert str(info.value).startswith(expected.format(repository=tool_image.split("@")[0]))
    if command[1:2] == ["sleep"]:
        assert "timed out after 3" in str(info.value)
    assert not (tmp_path / "dockerd").exists() and not short_folder(tmp_path / "dockerd").exists()


def _shims_of(daemon: Path) -> list[int]:
    """The containerd shims of the dockerd of `daemon` (a shim works in its container's bundle, under the
    daemon's exec root): one per container, the container's process its child."""
    from dropship.dockerd import short_folder

    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd").startswith(f"{short_folder(daemon)}/"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_failed_container_removal_does_not_hide_the_builds_own_error(tool_image: str, tmp_path: Path) -> None:
    """The build's dockerd dies while the container runs: the build fails saying so (while waiting for the
    container), and removing the container, which then fails too, is logged rather than raised over it."""
    import signal
    import threading
    import time

    from dropship.errors import BuildFailed

    daemon = tmp_path / "dockerd"
    killed: list[int] = []

    def kill_dockerd_once_the_build_runs() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            running = [shim for shim in _shims_of(daemon) if Path(f"/proc/{shim}/task/{shim}/children").read_text()]
            if running and (daemon / "dockerd.pid").exists():
                killed.append(int((daemon / "dockerd.pid").read_text()))
                os.kill(killed[0], signal.SIGKILL)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_dockerd_once_the_build_runs, daemon=True)
    killer.start()
    with pytest.raises(BuildFailed) as info:
        _run_in(tool_image, tmp_path, ["/tool", "sleep", "20"], timeout=60)
    killer.join(timeout=5)
    assert killed, "the build container never ran"
    # the build's own step fails (starting or waiting, as the kill falls), not the removal after it
    assert re.match(
        r"target t: (starting|waiting for) the build container: the build's dockerd is not answering", str(info.value)
    ), info.value
    assert "\n" not in str(info.value)
    assert _shims_of(daemon) == []  # the dead daemon's shim and container are killed when it is stopped
