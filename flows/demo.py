"""`dropship demo`: the example release on this machine, end to end."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from prefect.logging.handlers import APILogHandler
from pydantic import SecretStr

from blocks.digitalocean import DigitalOceanCredentials
from blocks.repo_server import RepoServer
from blocks.signing_key import SigningKey
from cli.run import failure_text
from dropship.demo import prepare_repository
from dropship.errors import ConfigError
from dropship.manifest import load_manifest
from dropship.progress import closing_lines
from dropship.signing import generate_key
from flows.release import release


def demo_key(workdir: Path) -> str:
    """The demo's signing key: generated once per demo folder, then reused.

    A new key per run would orphan the signatures of packages published
    before (RPMs keep the signature they were published with).
    """
    path = workdir / "signing-key.asc"
    if path.exists():
        return path.read_text()
    key = generate_key("hello demo release key", "hello-release@example.invalid", expire_days=365)
    path.touch(mode=0o600)
    path.write_text(key)
    return key


def run_demo(workdir: Path, tag: str, provider: str = "local", do_endpoint: str | None = None) -> tuple[bool, str]:
    """Run the example release; return (published, message to print).

    With `provider="digitalocean"` the machines are droplets of the API at
    `do_endpoint` (the emulator: `dropship emulator`), with the token from
    $DIGITALOCEAN_TOKEN; the release bootstraps each droplet over SSH with this
    orchestrator's dropship and Prefect versions.
    """
    source = prepare_repository(workdir / "hello", tag)
    manifest_path = source / "dropship.toml"
    manifest = load_manifest(manifest_path)
    demo_key(workdir)  # the block names the file: the key itself never enters Prefect
    SigningKey(private_key_file=str((workdir / "signing-key.asc").resolve())).save(
        manifest.blocks.signing_key, overwrite=True
    )
    published = workdir / "published"
    RepoServer(path=str(published)).save(manifest.blocks.repo_server, overwrite=True)
    if provider == "digitalocean":
        token = os.environ.get("DIGITALOCEAN_TOKEN", "")
        if not token or not do_endpoint:
            raise ConfigError("the digitalocean demo needs --do-endpoint and the token in $DIGITALOCEAN_TOKEN")
        auth = os.environ.get("PREFECT_API_AUTH_STRING")
        DigitalOceanCredentials(
            token_env="DIGITALOCEAN_TOKEN",
            endpoint=do_endpoint,
            api_auth_string=SecretStr(auth) if auth else None,
        ).save(manifest.machines.credentials, overwrite=True)

    state = release(
        manifest=str(manifest_path), tag=tag, workdir=str(workdir / "state"), provider=provider, return_state=True
    )
    APILogHandler().flush()  # before the caller stops the server
    run_id = state.state_details.flow_run_id
    summary_file = workdir / "state" / "runs" / str(run_id) / "summary.json"
    if summary_file.exists():
        shutil.copyfile(summary_file, workdir / "summary.json")
    if not state.is_completed():
        return False, f"release failed: {failure_text(state)}"
    summary = json.loads(summary_file.read_text())
    lines = closing_lines(
        summary,
        key_name=manifest.repository.key_name,
        component=manifest.repository.component,
        summary_path=str(workdir / "summary.json"),
        provider=provider,
    )
    return True, "\n".join(lines)
