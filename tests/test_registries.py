"""npm packages published to a real verdaccio with the real `npm publish`; `npm
view` proves what the registry serves. The tarballs' own checks need no server."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.errors import RegistryError
from dropship.jobs import LanguageKind, Registry, RegistryKind
from dropship.manifest import parse_manifest
from dropship.registries import NpmRegistry, conflicts, dist_tag, inspect, integrity, language_files, publish
from tests.npm_registry import Verdaccio, need_node, running_verdaccio

USER = "uploader"
PASSWORD = "npm-secret-Vb83qLmT"


@pytest.fixture(scope="module")
def verdaccio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Verdaccio]:
    with running_verdaccio(tmp_path_factory.mktemp("verdaccio"), USER, PASSWORD) as server:
        yield server


def npm_pack(folder: Path, name: str, version: str, greeting: str = "hello") -> Path:
    """A tarball made by the real `npm pack` from a tiny package."""
    _, npm = need_node()
    folder.mkdir(parents=True)
    (folder / "package.json").write_text(
        json.dumps({"name": name, "version": version, "main": "index.js", "license": "MIT"})
    )
    (folder / "index.js").write_text(f"module.exports = () => {json.dumps(greeting)};\n")
    subprocess.run(
        [npm, "pack", "--ignore-scripts", "--no-update-notifier", "--logs-max=0"],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    (tarball,) = folder.glob("*.tgz")
    return tarball


def manifest_for(url: str) -> object:
    return parse_manifest(
        {
            "project": {"name": "hello"},
            "targets": [
                {
                    "name": "js",
                    "arch": "amd64",
                    "build": ["npm", "pack"],
                    "packages": [{"kind": "npm", "glob": "out/*.tgz", "registry": "test-npm"}],
                }
            ],
            "registries": [{"name": "test-npm", "kind": "npm", "url": url, "credentials": "test-npm-credentials"}],
        }
    )


def collected(tmp_path: Path, url: str, *tarballs: Path) -> list:  # type: ignore[type-arg]
    """The tarballs where a release collects them (artifacts/<target>/), as `language_files` finds them."""
    artifacts = tmp_path / "artifacts"
    (artifacts / "js").mkdir(parents=True, exist_ok=True)
    for tarball in tarballs:
        shutil.copy(tarball, artifacts / "js" / tarball.name)
    return language_files(manifest_for(url), ["js"], artifacts)  # type: ignore[arg-type]


def recording_npm(tmp_path: Path) -> tuple[list[str], Path]:
    """The real npm behind a wrapper that records its arguments and the user config's and folder's modes."""
    _, npm = need_node()
    record = tmp_path / "npm-calls.log"
    wrapper = tmp_path / "npm-wrapper"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'printf "argv %s\\n" "$*" >> {record}\n'
        'prev=""; for a in "$@"; do\n'
        '  if [ "$prev" = "--userconfig" ]; then\n'
        f'    printf "modes %s %s\\n" "$(stat -c %a "$a")" "$(stat -c %a "$(dirname "$a")")" >> {record}\n'
        f'    printf "config %s\\n" "$a" >> {record}\n'
        "  fi; prev=$a\n"
        "done\n"
        f'exec {npm} "$@"\n'
    )
    wrapper.chmod(0o755)
    return [str(wrapper)], record


def registry(server: Verdaccio) -> Registry:
    return Registry(name="test-npm", kind=RegistryKind.NPM, url=server.url, credentials="test-npm-credentials")


def test_npm_package_is_published_once_and_never_changed(verdaccio: Verdaccio, tmp_path: Path) -> None:
    tarball = npm_pack(tmp_path / "a", "hello-dropship", "0.1.0")
    (file,) = collected(tmp_path / "first", verdaccio.url, tarball)
    assert (file.kind, file.name, file.version) == (LanguageKind.NPM, "hello-dropship", "0.1.0")
    npm, record = recording_npm(tmp_path)
    target = NpmRegistry(registry(verdaccio), USER, PASSWORD, npm=npm)
    outputs: list[str] = []

    assert conflicts([file], target) == {"hello-dropship-0.1.0.tgz": "new"}
    (done,) = publish([file], target)
    assert (done.file, done.registry, done.status, done.sha256) == (
        "hello-dropship-0.1.0.tgz",
        "test-npm",
        "uploaded",
        file.sha256,
    )
    view = verdaccio.view("hello-dropship@0.1.0", "version", "dist.integrity", "dist-tags")
    assert view == {
        "version": "0.1.0",
        "dist.integrity": integrity(tarball),
        "dist-tags": {"latest": "0.1.0"},
    }

    # the same bytes again: already published, nothing uploaded
    calls = record.read_text()
    (again,) = publish(collected(tmp_path / "again", verdaccio.url, tarball), target)
    assert again.status == "already published" and again.sha256 == file.sha256
    assert record.read_text() == calls, "npm was not run again"

    # other bytes under the same version: refused before anything is uploaded
    changed = npm_pack(tmp_path / "b", "hello-dropship", "0.1.0", greeting="hi")
    assert integrity(changed) != integrity(tarball)
    with pytest.raises(RegistryError) as refused:
        publish(collected(tmp_path / "changed", verdaccio.url, changed), target)
    message = str(refused.value)
    outputs.append(message)
    assert message.startswith("registry test-npm already has hello-dropship@0.1.0 with sha512-") and "\n" not in message
    assert "a published version never changes; release a new version" in message
    assert record.read_text() == calls
    assert verdaccio.view("hello-dropship@0.1.0", "dist.integrity") == integrity(tarball)
    # had it been uploaded anyway, the registry refuses too: npm's error, in one line, without the password
    with pytest.raises(RegistryError) as npm_refused:
        target.upload([changed])
    message = str(npm_refused.value)
    outputs.append(message)
    assert message.startswith("registry test-npm: npm publish hello-dropship-0.1.0.tgz exited 1: ")
    assert "\n" not in message and "cannot publish over the previously published versions" in message, message

    # the credentials went to npm in a private 0600 file, never on its command line
    lines = record.read_text().splitlines()
    argvs = [line for line in lines if line.startswith("argv ")]
    assert len(argvs) == 2
    assert all("publish" in argv and "--tag latest" in argv and "--ignore-scripts" in argv for argv in argvs)
    assert [line for line in lines if line.startswith("modes ")] == ["modes 600 700"] * 2
    outputs += [record.read_text(), verdaccio.log.read_text(errors="replace")]
    for text in outputs:
        assert PASSWORD not in text
    configs = [Path(line.split(" ", 1)[1]) for line in lines if line.startswith("config ")]
    assert len(configs) == 2 and not any(c.parent.exists() for c in configs), "private folders removed"


def test_a_token_publishes_with_the_dist_tag_npm_wants(verdaccio: Verdaccio, tmp_path: Path) -> None:
    """username __token__: the password is a token (what `npm login` gives); prereleases and older lines get tags."""
    token = verdaccio.login_token()
    target = NpmRegistry(registry(verdaccio), "__token__", token)
    files = collected(
        tmp_path / "c",
        verdaccio.url,
        npm_pack(tmp_path / "v10", "hello-tagged", "10.0.0"),
        npm_pack(tmp_path / "v9", "hello-tagged", "9.0.0"),
        npm_pack(tmp_path / "rc", "hello-tagged", "11.0.0-rc.1"),
    )
    # in one upload, file-name order: 10.0.0, 11.0.0-rc.1, 9.0.0 (latest stays 10.0.0)
    assert [f.version for f in files] == ["10.0.0", "11.0.0-rc.1", "9.0.0"]
    assert [p.status for p in publish(files, target)] == ["uploaded"] * 3
    (older,) = collected(tmp_path / "d", verdaccio.url, npm_pack(tmp_path / "v0", "hello-tagged", "0.9.1"))
    (done,) = publish([older], NpmRegistry(registry(verdaccio), "__token__", token))  # reads latest afresh
    assert done.status == "uploaded"
    tags = verdaccio.view("hello-tagged", "dist-tags")
    assert tags == {"latest": "10.0.0", "next": "11.0.0-rc.1", "latest-9": "9.0.0", "latest-0": "0.9.1"}
    assert sorted(target.served("hello-tagged")) == [
        "hello-tagged@0.9.1",
        "hello-tagged@10.0.0",
        "hello-tagged@11.0.0-rc.1",
        "hello-tagged@9.0.0",
    ]


def test_wrong_credentials_are_refused_without_showing_them(verdaccio: Verdaccio, tmp_path: Path) -> None:
    wrong = "wrong-password-Hq2c"
    (file,) = collected(tmp_path / "e", verdaccio.url, npm_pack(tmp_path / "w", "hello-refused", "0.1.0"))
    target = NpmRegistry(registry(verdaccio), USER, wrong)
    with pytest.raises(RegistryError) as reading:
        publish([file], target)
    assert str(reading.value) == (
        f"registry test-npm: {verdaccio.url}hello-refused answered 401: check its credentials block"
    )
    assert wrong not in str(reading.value)


def test_a_password_with_a_line_break_is_refused_before_any_use() -> None:
    """It would end the npmrc line (and add another); the message does not show it."""
    nowhere = Registry(name="test-npm", kind=RegistryKind.NPM, url="http://127.0.0.1:9/", credentials="c")
    with pytest.raises(RegistryError) as caught:
        NpmRegistry(nowhere, "__token__", "tok-Zx81\nregistry=http://127.0.0.1:9/")
    assert str(caught.value) == ("registry test-npm: the password or token has a line break: fix its credentials block")


def test_npm_missing_is_said_plainly(verdaccio: Verdaccio, tmp_path: Path) -> None:
    (file,) = collected(tmp_path / "f", verdaccio.url, npm_pack(tmp_path / "m", "hello-nonpm", "0.1.0"))
    target = NpmRegistry(registry(verdaccio), USER, PASSWORD, npm=[str(tmp_path / "no-such-npm")])
    with pytest.raises(RegistryError, match="npm is not installed on the orchestrator"):
        publish([file], target)


# --- tarballs, without a registry -------------------------------------------


def _tgz(path: Path, members: dict[str, bytes]) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buffer.getvalue()))
    return path


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        (None, "not a gzip file"),
        ({"hello/package.json": b'{"name": "x", "version": "1.0.0"}'}, "no package/package.json inside"),
        ({"package/package.json": b"{nope"}, "Expecting property name"),
        ({"package/package.json": b"[1]"}, "is not a JSON object"),
        ({"package/package.json": b'{"version": "1.0.0"}'}, "name None is not a valid npm package name"),
        ({"package/package.json": b'{"name": "Hello", "version": "1.0.0"}'}, "name 'Hello' is not a valid"),
        ({"package/package.json": b'{"name": "x", "version": "1.0"}'}, "version '1.0' is not a semantic version"),
        (
            {"package/package.json": b'{"name": "x", "version": "1.0.0", "private": true}'},
            '"private": true, which npm refuses',
        ),
    ],
)
def test_malformed_npm_tarballs_are_refused(tmp_path: Path, members: dict[str, bytes] | None, problem: str) -> None:
    path = tmp_path / "x-1.0.0.tgz"
    if members is None:
        path.write_bytes(b"not a tarball")
    else:
        _tgz(path, members)
    with pytest.raises(RegistryError) as caught:
        inspect(path, LanguageKind.NPM)
    message = str(caught.value)
    assert message.startswith("x-1.0.0.tgz is not a well-formed npm: ") and "\n" not in message
    assert problem in message, message


def test_a_scoped_package_is_inspected(tmp_path: Path) -> None:
    path = _tgz(tmp_path / "s.tgz", {"package/package.json": b'{"name": "@hello/dropship", "version": "1.2.3-rc.1"}'})
    assert inspect(path, LanguageKind.NPM) == ("@hello/dropship", "1.2.3-rc.1")


@pytest.mark.parametrize(
    ("version", "latest", "tag"),
    [
        ("1.0.0", None, "latest"),
        ("1.0.1", "1.0.0", "latest"),
        ("1.0.0", "1.0.0", "latest"),
        ("1.0.0", "1.0.0-rc.1", "latest"),
        ("2.0.0-rc.1", "1.0.0", "next"),
        ("1.4.9", "2.0.0", "latest-1"),
        ("0.9.1", "1.0.0", "latest-0"),
    ],
)
def test_dist_tag(version: str, latest: str | None, tag: str) -> None:
    assert dist_tag(version, latest) == tag
