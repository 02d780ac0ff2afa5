"""A build command cannot reach the release's secrets.

It gets an allow-listed environment (no PREFECT_API_URL, no credential of
the worker or the orchestrator); where the worker is root it runs as an
unprivileged user; and the signing key is a reference in its block, resolved
on the orchestrator, so even a build that knows the Prefect API's address
reads nothing secret through the blocks API.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dropship.builder import build
from dropship.errors import ConfigError
from dropship.secretref import resolve_secret

PROBE = r"""
import json, os, urllib.request
out = {"api_url_in_env": os.environ.get("PREFECT_API_URL", ""), "env": sorted(os.environ),
       "secret_in_env": any("PRIVATE KEY" in v or v == "do-token-123" for v in os.environ.values())}
url = os.environ.get("PREFECT_API_URL") or os.environ["ATTACKER_KNOWS_URL"]
request = urllib.request.Request(url.rstrip("/") + "/block_documents/filter", method="POST",
                                 data=json.dumps({"include_secrets": True}).encode(),
                                 headers={"Content-Type": "application/json"})
out["blocks"] = urllib.request.urlopen(request, timeout=20).read().decode()
print(json.dumps(out))
"""


@pytest.fixture
def open_workspace() -> Iterator[Path]:
    """A workspace another user can traverse (pytest's tmp folders are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="dropship-build-test-", dir="/var/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _archive(folder: Path, files: dict[str, str]) -> Path:
    src = folder / "project"
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    archive = folder / "src.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=".")
    return archive


def test_a_build_sees_only_the_allow_listed_environment(open_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "PREFECT_API_URL": "http://127.0.0.1:4200/api",
        "PREFECT_API_KEY": "pnu_secret",
        "DIGITALOCEAN_TOKEN": "do-token-123",
        "HELLO_SIGNING_KEY": "-----BEGIN PGP PRIVATE KEY BLOCK-----",
    }.items():
        monkeypatch.setenv(name, value)
    archive = _archive(open_workspace, {"dump.sh": "mkdir -p out; env > out/env.txt\n"})
    report = build(
        target="t",
        workspace=open_workspace / "ws",
        archive=archive,
        command=["sh", "dump.sh"],
        artifacts=["out/env.txt"],
        version="1.0",
        env={"SOURCE_DATE_EPOCH": "1700000000", "CC": "gcc"},
        timeout=60,
    )
    seen = dict(line.split("=", 1) for line in Path(report.artifacts[0].path).read_text().splitlines() if "=" in line)
    assert not {"PREFECT_API_URL", "PREFECT_API_KEY", "DIGITALOCEAN_TOKEN", "HELLO_SIGNING_KEY"} & set(seen)
    assert seen["DROPSHIP_VERSION"] == "1.0" and seen["SOURCE_DATE_EPOCH"] == "1700000000" and seen["CC"] == "gcc"
    assert seen["HOME"] == str(open_workspace / "ws" / "home")
    assert set(seen) - {"PWD", "SHLVL", "_", "OLDPWD"} <= {
        "PATH",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
        "TERM",
        "HOME",
        "SOURCE_DATE_EPOCH",
        "CC",
        "DROPSHIP_VERSION",
        "DROPSHIP_TARGET",
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root, as on a droplet")
def test_a_root_workers_build_runs_unprivileged(open_workspace: Path, tmp_path: Path) -> None:
    secret = open_workspace / "worker.env"
    secret.write_text("PREFECT_API_KEY=pnu_secret\n")
    secret.chmod(0o600)
    script = (
        "mkdir -p out; id -u > out/probe.txt\n"
        f"cat {secret} >> out/probe.txt 2>&1 || echo 'credentials: denied' >> out/probe.txt\n"
        f"cat /proc/{os.getpid()}/environ >> out/probe.txt 2>&1 || echo 'worker environ: denied' >> out/probe.txt\n"
    )
    archive = _archive(open_workspace, {"probe.sh": script})
    report = build(
        target="t",
        workspace=open_workspace / "ws",
        archive=archive,
        command=["sh", "probe.sh"],
        artifacts=["out/probe.txt"],
        version="1.0",
        env={},
        timeout=60,
        run_as="dropship-build",
    )
    lines = Path(report.artifacts[0].path).read_text().splitlines()
    assert lines[0] != "0", "the build ran as root"
    assert "credentials: denied" in lines and "worker environ: denied" in lines
    assert "pnu_secret" not in "\n".join(lines)


def test_a_build_cannot_run_as_root_by_name(open_workspace: Path) -> None:
    archive = _archive(open_workspace, {"x.sh": "true\n"})
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with pytest.raises(ConfigError, match="must run unprivileged"):
        build(
            target="t",
            workspace=open_workspace / "ws",
            archive=archive,
            command=["sh", "x.sh"],
            artifacts=["x.sh"],
            version="1",
            env={},
            timeout=10,
            run_as="root",
        )


def test_secret_references_resolve_only_from_private_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "key.asc"
    key.write_text("secret\n")
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users.*chmod 600"):
        resolve_secret("signing key", value=None, file=str(key), env=None)
    key.chmod(0o600)
    assert resolve_secret("signing key", value=None, file=str(key), env=None) == "secret\n"
    with pytest.raises(ConfigError, match="SOME_UNSET_VARIABLE is empty or unset"):
        resolve_secret("signing key", value=None, file=None, env="SOME_UNSET_VARIABLE")
    monkeypatch.setenv("SOME_SET_VARIABLE", "v")
    assert resolve_secret("signing key", value=None, file=None, env="SOME_SET_VARIABLE") == "v"
    with pytest.raises(ConfigError, match="only one of"):
        resolve_secret("signing key", value="x", file=None, env="SOME_SET_VARIABLE")
    with pytest.raises(ConfigError, match="no secret configured"):
        resolve_secret("signing key", value=None, file=None, env=None)


def _block_documents(url: str) -> str:
    import urllib.request

    request = urllib.request.Request(
        url.rstrip("/") + "/block_documents/filter",
        method="POST",
        data=json.dumps({"include_secrets": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as answer:
        return str(answer.read().decode())


@pytest.mark.e2e
def test_a_release_build_reads_neither_the_api_url_nor_the_signing_key(
    prefect_server: str,
    signing_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from blocks.repo_server import RepoServer
    from blocks.signing_key import SigningKey
    from dropship.demo import prepare_repository
    from flows.release import release
    from tests.support import commit_and_tag, machine_processes_under

    monkeypatch.setenv("HELLO_SECRETS_SIGNING_KEY", signing_key)  # the orchestrator's environment only
    SigningKey(private_key_env="HELLO_SECRETS_SIGNING_KEY").save("hello-secrets-key", overwrite=True)
    RepoServer(path=str(tmp_path / "published")).save("hello-secrets-repo", overwrite=True)
    (document,) = [d for d in json.loads(_block_documents(prefect_server)) if d.get("name") == "hello-secrets-key"]
    assert "PRIVATE KEY" not in json.dumps(document), "no key material is stored in Prefect"

    repo = prepare_repository(tmp_path / "hello", "v0.0.1")
    (repo / "probe.py").write_text(PROBE)
    subprocess.run(["git", "-C", str(repo), "add", "probe.py"], check=True)
    commit_and_tag(
        repo,
        "v0.9.0",
        {
            'build = ["sh", "packaging/build.sh", "deb", "amd64"]': 'build = ["sh", "-c", "python3 probe.py > probe.json 2>&1; sh packaging/build.sh deb amd64"]',
            'artifacts = ["out/*.deb"]\nsetup = ["dpkg-dev"]\nrebuild_patterns = ["^src/", "^packaging/"]\n\n[[targets]]\nname = "arm64-deb"': f'artifacts = ["out/*.deb", "probe.json"]\nsetup = ["dpkg-dev"]\nrebuild_patterns = ["^src/", "^packaging/"]\n'
            f'env = {{ ATTACKER_KNOWS_URL = "{prefect_server}" }}\n\n[[targets]]\nname = "arm64-deb"',
            'signing_key = "hello-signing-key"': 'signing_key = "hello-secrets-key"',
            'repo_server = "hello-repo"': 'repo_server = "hello-secrets-repo"',
        },
    )
    state = release(
        manifest=str(repo / "dropship.toml"),
        tag="v0.9.0",
        targets=["amd64-deb"],
        dry_run=True,
        workdir=str(tmp_path / "state"),
        return_state=True,
    )
    assert state.is_completed(), state.message
    run_id = str(state.state_details.flow_run_id)
    text = (tmp_path / "state" / "runs" / run_id / "artifacts" / "amd64-deb" / "probe.json").read_text()
    probe: dict[str, Any] = json.loads(text) if text.startswith("{") else {"error": text}
    assert "error" not in probe, probe
    assert probe["api_url_in_env"] == "" and not probe["secret_in_env"]
    assert not [n for n in probe["env"] if n.startswith("PREFECT_") or "SIGNING" in n or "TOKEN" in n]
    # The session's Prefect server also holds other tests' blocks, some with an
    # inline key on purpose; what matters is what this release's block gives away.
    (seen,) = [d for d in json.loads(probe["blocks"]) if d.get("name") == "hello-secrets-key"]
    assert seen["data"]["private_key_env"] == "HELLO_SECRETS_SIGNING_KEY", "the build did reach the blocks API"
    assert "PRIVATE KEY" not in json.dumps(seen) and signing_key.splitlines()[2] not in json.dumps(seen)
    assert machine_processes_under(tmp_path) == []
