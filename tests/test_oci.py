"""Images in a real registry (Debian's docker-registry with htpasswd auth, `tests/registry.py`),
built by a real dockerd from the example's Dockerfile (`dropship.oci_build`), moved with skopeo
(`dropship.oci`), pulled and run by the session's dockerd."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dropship.emulator.dockerd import DockerDaemon
from dropship.errors import BuildFailed, ImageError
from dropship.oci import (
    INDEX_TYPE,
    IndexImage,
    PlatformImage,
    RegistryAuth,
    Skopeo,
    current_tags,
    image_tags,
    move_tags,
    platforms,
    push_archive,
    push_index,
    tag_digest,
)
from dropship.oci_build import build_image
from dropship.oci_registry import LocalRegistry
from tests.conftest import EXAMPLE

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dockerd needs root")


def _example_image(tmp: Path, arch: str, version: str) -> Path:
    """The example's image for `arch`, built as its machine would: build.sh image ARCH, then the Dockerfile."""
    source = tmp / f"src-{arch}-{version}"
    shutil.copytree(EXAMPLE, source)
    subprocess.run(
        ["sh", "packaging/build.sh", "image", arch],
        cwd=source,
        check=True,
        capture_output=True,
        env={**os.environ, "DROPSHIP_VERSION": version},
    )
    return build_image(
        target=f"{arch}-image",
        workspace=tmp / f"ws-{arch}-{version}",
        source=source,
        dockerfile="packaging/Dockerfile",
        platform=f"linux/{arch}",
        version=version,
        out_dir=tmp / f"out-{arch}-{version}",
    )


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """{version: {arch: docker-save archive}} for 1.2.3 and 1.3.0: real builds, each with its own dockerd."""
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    tmp = tmp_path_factory.mktemp("images")
    return {v: {a: _example_image(tmp, a, v) for a in ("amd64", "arm64")} for v in ("1.2.3", "1.3.0")}


def _release(registry: LocalRegistry, repository: str, archives: dict[str, Path]) -> IndexImage:
    with Skopeo(registry.auth) as skopeo:
        images = [push_archive(skopeo, archive, repository) for archive in archives.values()]
        return push_index(skopeo, repository, images)


@needs_root
def test_arm64_image_builds_on_amd64_without_emulation(archives: dict[str, dict[str, Path]]) -> None:
    import io
    import tarfile

    with tarfile.open(archives["1.2.3"]["arm64"]) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        (layer,) = manifest[0]["Layers"]
        layer_bytes = tar.extractfile(layer).read()  # type: ignore[union-attr]
    assert (config["os"], config["architecture"]) == ("linux", "arm64")
    with tarfile.open(fileobj=io.BytesIO(layer_bytes)) as files:
        binary = files.extractfile("hello").read()  # type: ignore[union-attr]
    assert binary[:4] == b"\x7fELF" and int.from_bytes(binary[18:20], "little") == 183  # EM_AARCH64


@needs_root
def test_stable_index_has_both_platforms_and_three_tags(
    registry: LocalRegistry, archives: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    repository = registry.repository("stable/hello")
    index = _release(registry, repository, archives["1.2.3"])
    tags = image_tags("stable", "1.2.3", "0" * 40)
    assert tags == ["1.2.3", "1.2", "latest"]
    with Skopeo(registry.auth) as skopeo:
        assert current_tags(skopeo, repository, tags) == dict.fromkeys(tags)  # pushed by digest: no tag yet
        before = move_tags(skopeo, repository, index.digest, tags)
        assert before == dict.fromkeys(tags)
        assert current_tags(skopeo, repository, tags) == dict.fromkeys(tags, index.digest)
        assert sorted(p.platform for p in platforms(skopeo, f"{repository}:1.2")) == ["linux/amd64", "linux/arm64"]
    # skopeo's own command line, as an operator would check it
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {registry.host: {"auth": _basic(registry.username, registry.password)}}}))
    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--authfile",
            str(authfile),
            f"docker://{repository}:1.2.3",
        ],
        check=True,
        capture_output=True,
    ).stdout
    document = json.loads(raw)
    assert document["mediaType"] == INDEX_TYPE
    assert sorted((m["platform"]["os"], m["platform"]["architecture"]) for m in document["manifests"]) == [
        ("linux", "amd64"),
        ("linux", "arm64"),
    ]
    assert {m["digest"] for m in document["manifests"]} == {p.digest for p in index.platforms}


def _basic(user: str, password: str) -> str:
    import base64

    return base64.b64encode(f"{user}:{password}".encode()).decode()


@needs_root
def test_docker_pulls_by_tag_and_digest_and_runs_the_version(
    registry: LocalRegistry, archives: dict[str, dict[str, Path]], dockerd: DockerDaemon
) -> None:
    repository = registry.repository("pull/hello")
    index = _release(registry, repository, archives["1.2.3"])
    with Skopeo(registry.auth) as skopeo:
        move_tags(skopeo, repository, index.digest, ["1.2.3"])
    auth = {"username": registry.username, "password": registry.password}
    by_tag = dockerd.client.images.pull(repository, tag="1.2.3", auth_config=auth)
    by_digest = dockerd.client.images.pull(f"{repository}@{index.digest}", auth_config=auth)
    assert by_tag.id == by_digest.id
    assert by_tag.attrs["Architecture"] == "amd64"  # the daemon's platform, chosen from the index
    output = dockerd.client.containers.run(f"{repository}:1.2.3", ["--version"], remove=True, network_mode="host")
    assert output.decode().strip() == "hello 1.2.3"
    output = dockerd.client.containers.run(by_digest.id, remove=True, network_mode="host")  # the image's CMD
    assert output.decode().strip() == "hello 1.2.3"


@needs_root
def test_promote_and_rollback_move_tags_without_building(
    registry: LocalRegistry, archives: dict[str, dict[str, Path]]
) -> None:
    repository = registry.repository("promote/hello")
    first = _release(registry, repository, archives["1.2.3"])
    dev = _release(registry, repository, archives["1.3.0"])
    assert first.digest != dev.digest
    with Skopeo(registry.auth) as skopeo:
        move_tags(skopeo, repository, first.digest, image_tags("stable", "1.2.3", ""))
        dev_tags = image_tags("development", "0~dev", "abcdef0123456789")
        assert dev_tags == ["nightly", "dev-abcdef012345"]
        move_tags(skopeo, repository, dev.digest, dev_tags)
        # promote the development index as 1.3.0: no archive, no dockerd, tags only
        digest = tag_digest(skopeo, repository, "dev-abcdef012345")
        assert digest == dev.digest
        before = move_tags(skopeo, repository, digest, image_tags("stable", "1.3.0", ""))
        assert before == {"1.3.0": None, "1.3": None, "latest": first.digest}
        assert current_tags(skopeo, repository, ["1.3.0", "1.3", "latest", "1.2.3", "nightly"]) == {
            "1.3.0": dev.digest,
            "1.3": dev.digest,
            "latest": dev.digest,
            "1.2.3": first.digest,
            "nightly": dev.digest,
        }
        # roll back: the tags that existed go back to their digests
        move_tags(skopeo, repository, first.digest, [tag for tag, was in before.items() if was == first.digest])
        assert tag_state(skopeo, repository) == {
            "latest": first.digest,
            "1.2.3": first.digest,
            "1.3.0": dev.digest,  # a registry deletes manifests, not tags: the new version's own tag stays
        }


def tag_state(skopeo: Skopeo, repository: str) -> dict[str, str | None]:
    return current_tags(skopeo, repository, ["latest", "1.2.3", "1.3.0"])


@needs_root
def test_an_index_of_a_missing_digest_moves_no_tag(
    registry: LocalRegistry, archives: dict[str, dict[str, Path]]
) -> None:
    repository = registry.repository("partial/hello")
    index = _release(registry, repository, archives["1.2.3"])
    with Skopeo(registry.auth) as skopeo:
        move_tags(skopeo, repository, index.digest, ["1.2.3", "1.2", "latest"])
        before = current_tags(skopeo, repository, ["1.2.3", "1.2", "latest"])
        missing = PlatformImage("linux/arm64", "sha256:" + "1" * 64, 400)
        amd64 = next(p for p in index.platforms if p.platform == "linux/amd64")
        with pytest.raises(ImageError, match="is not in the registry"):
            push_index(skopeo, repository, [amd64, missing])
        assert current_tags(skopeo, repository, ["1.2.3", "1.2", "latest"]) == before


def test_wrong_password_fails_in_one_line_without_it(registry: LocalRegistry) -> None:
    secret = "not-the-password-Zq81"
    wrong = RegistryAuth(registry.host, registry.username, secret)
    with Skopeo(wrong) as skopeo:
        folder = skopeo.scratch
        assert oct((folder / "auth.json").stat().st_mode & 0o777) == "0o600"
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        with pytest.raises(ImageError) as caught:
            skopeo.raw_manifest(f"{registry.host}/auth/hello:latest")
    message = str(caught.value)
    assert "\n" not in message and secret not in message and "unauthorized" in message.lower()
    assert not folder.exists()  # the auth file is gone with its folder
    assert secret not in repr(wrong) and registry.password not in registry.log.read_text()


def test_image_tags_by_class() -> None:
    assert image_tags("stable", "2.0.1", "c" * 40) == ["2.0.1", "2.0", "latest"]
    assert image_tags("extra", "1.5.0~rc1", "c" * 40) == ["1.5.0-rc1"]
    assert image_tags("extra", "1.4.2+hotfix1", "c" * 40) == ["1.4.2_hotfix1"]
    assert image_tags("development", "0~dev2026.gabc", "abc1234def5678") == ["nightly", "dev-abc1234def56"]
    with pytest.raises(ImageError):
        image_tags("weekly", "1.0.0", "")


@needs_root
def test_a_dockerfile_that_fails_is_the_targets_failure(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "Dockerfile").write_text("FROM scratch\nCOPY missing-binary /hello\n")
    with pytest.raises(BuildFailed, match="docker build of Dockerfile for linux/amd64 failed"):
        build_image(
            target="amd64-image",
            workspace=tmp_path,
            source=source,
            dockerfile="Dockerfile",
            platform="linux/amd64",
            version="1.0.0",
            out_dir=tmp_path / "out",
        )
    assert not (tmp_path / "dockerd").exists()  # the build's daemon is stopped and swept
