"""`dropship demo`: the example release on this machine, end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
from pathlib import Path

from prefect.logging.handlers import APILogHandler
from prefect_docker.credentials import DockerRegistryCredentials
from pydantic import SecretStr

from blocks.digitalocean import DigitalOceanCredentials
from blocks.registry import RegistryCredentials
from blocks.repo_server import RepoServer
from blocks.signing_key import SigningKey
from cli.run import failure_text
from dropship.demo import DEMO_INDEX_CREDENTIALS, example_source, prepare_repository, publish_wheels_to
from dropship.errors import ConfigError
from dropship.manifest import load_manifest
from dropship.oci_registry import LocalRegistry, start_registry
from dropship.package_index import USER, LocalPackageIndex
from dropship.progress import closing_lines
from dropship.run_folder import RunFolder
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


def run_demo(
    workdir: Path,
    tag: str,
    provider: str = "local",
    do_endpoint: str | None = None,
    image: bool = False,
    worker_api_url: str | None = None,
) -> tuple[bool, str]:
    """Run the example release; return (published, message to print).

    With `image` the example's image targets (examples/hello/oci.toml) are
    released too, to a registry the demo starts (`demo_registry`).

    With `provider="digitalocean"` the machines are droplets of the API at
    `do_endpoint` (the emulator: `dropship emulator`), with the token from
    $DIGITALOCEAN_TOKEN; the release bootstraps each droplet over SSH with this
    orchestrator's dropship and Prefect versions, its worker reaching Prefect at
    `worker_api_url` (a droplet's loopback is its own: with the emulator, the
    name it publishes for this machine's Prefect port).
    """
    index: LocalPackageIndex | None = None
    registry: LocalRegistry | None = None
    try:
        if importlib.util.find_spec("pypiserver") is not None:
            index = LocalPackageIndex(workdir / "index")
            index.start()
        if image:
            registry = demo_registry(workdir)
        return _release(workdir, tag, provider, do_endpoint, index, registry, worker_api_url)
    finally:
        if registry is not None:
            registry.stop()
        if index is not None:
            index.stop()


DEMO_REGISTRY_PORT = 5000
"""The port in examples/hello/oci.toml's [oci] repository."""


def demo_registry(workdir: Path) -> LocalRegistry:
    """The demo's registry: docker-registry on 127.0.0.1:5000 with its data in DIR/registry, and its
    DockerRegistryCredentials block. The password is made once per demo folder (mode 0600 file)."""
    if os.geteuid() != 0:
        raise ConfigError("dropship demo --image builds images with a dockerd of its own: run it as root")
    folder = workdir / "registry"
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder / "password"
    if not secret.exists():
        secret.touch(mode=0o600)
        secret.write_text(secrets.token_urlsafe(18))
    registry = start_registry(folder, port=DEMO_REGISTRY_PORT, password=secret.read_text().strip())
    DockerRegistryCredentials(username=registry.username, password=registry.password, registry_url=registry.host).save(
        "hello-registry", overwrite=True
    )
    return registry


def with_image_targets(workdir: Path) -> Path:
    """The example with examples/hello/oci.toml appended to its manifest, in DIR/example-image."""
    copy = workdir / "example-image"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(example_source(), copy, ignore=shutil.ignore_patterns("out", "build"))
    manifest = copy / "dropship.toml"
    manifest.write_text(manifest.read_text() + "\n" + (copy / "oci.toml").read_text())
    return copy


def _release(
    workdir: Path,
    tag: str,
    provider: str,
    do_endpoint: str | None,
    index: LocalPackageIndex | None,
    registry: LocalRegistry | None,
    worker_api_url: str | None = None,
) -> tuple[bool, str]:
    example = with_image_targets(workdir) if registry is not None else None
    if index is not None:
        source = prepare_repository(workdir / "hello", tag, example, manifest_edit=publish_wheels_to(index.url))
        RegistryCredentials(username=USER, password_file=str(index.password_file.resolve())).save(
            DEMO_INDEX_CREDENTIALS, overwrite=True
        )
    else:
        source = prepare_repository(workdir / "hello", tag, example)
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
            worker_api_url=worker_api_url,
        ).save(manifest.machines.credentials, overwrite=True)

    state = release(
        manifest=str(manifest_path), tag=tag, workdir=str(workdir / "state"), provider=provider, return_state=True
    )
    APILogHandler().flush()  # before the caller stops the server
    run_id = state.state_details.flow_run_id
    summary_file = RunFolder.of(workdir / "state", str(run_id)).summary
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
    if summary.get("image") and registry is not None:
        lines.append(
            f"  (the registry is stopped; serve it again with: docker-registry serve {registry.config}; "
            f"user {registry.username}, password in {registry.folder / 'password'})"
        )
    if index is not None:
        lines += [
            "",
            f"pip (the wheel, from the demo's index; serve it again with `python -m pypiserver run {index.packages}`):",
            f"  pip install --no-index --find-links {index.packages} hello-dropship=={summary['version']}",
        ]
    else:
        lines += [
            "",
            "The wheel was built but not published: the demo's package index needs `pip install 'dropship[demo]'`.",
        ]
    return True, "\n".join(lines)
