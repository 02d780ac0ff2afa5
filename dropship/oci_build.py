"""On an image target's machine: one per-architecture image from the project's Dockerfile.

Runs in the build flow after the target's build command (which makes what the
Dockerfile copies, e.g. a cross-compiled static binary). The machine has
Docker only because the manifest says so: an `oci` target must list
`docker.io` in its setup, which a droplet installs at bootstrap (local
machines use the host's). dropship starts a dockerd of its own for the one
build (`dropship.dockerd.BuildDaemon`: `--iptables=false --bridge=none`, data
root in the build's workspace, where a deleted machine's sweep finds what a
killed build left, socket and exec root under /tmp), builds with `--platform linux/<arch>`
and no pull, saves the image as a `docker save` archive next to the
workspace, and stops the daemon and its containerd.

An arm64 image builds on an amd64 machine without emulation as long as the
Dockerfile runs nothing: `FROM scratch` plus `COPY` of a static binary.

The archive comes back to the orchestrator as the target's artifact; the
orchestrator pushes it by digest (`dropship.oci.push_archive`), so registry
credentials never reach a build machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from dropship.dockerd import DOCKERD_FOLDER, BuildDaemon
from dropship.errors import BuildFailed

ARCHIVE_SUFFIX = "-image.tar"


def image_archive_name(target: str) -> str:
    return f"{target}{ARCHIVE_SUFFIX}"


def build_image(
    *, target: str, workspace: Path, source: Path, dockerfile: str, platform: str, version: str, out_dir: Path
) -> Path:
    """Build `dockerfile` in `source` for `platform` with a dockerd of the build's own (in `workspace`);
    return the saved archive."""
    import docker  # the Docker SDK (a prefect-docker dependency); imported where an image is built

    if not (source / dockerfile).is_file():
        raise BuildFailed(target, f"the Dockerfile {dockerfile!r} is not in the source tree after the build")
    tag = f"dropship-build/{target}:{version.replace('~', '-').replace('+', '_')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / image_archive_name(target)
    with BuildDaemon(workspace / DOCKERD_FOLDER, target, "an image target") as built:
        daemon = built.daemon
        try:
            image, _logs = daemon.client.images.build(
                path=str(source),
                dockerfile=dockerfile,
                platform=platform,
                tag=tag,
                rm=True,
                forcerm=True,
                pull=False,
                # No network: the Dockerfile is project code the build could rewrite, and
                # dockerd runs as root; with host networking its RUN steps would reach the
                # machine's loopback services (the worker's API among them).
                network_mode="none",
                buildargs={"DROPSHIP_VERSION": version},
            )
        except docker.errors.BuildError as exc:
            last = next(
                (
                    str(line.get("error") or line.get("stream") or "").strip()
                    for line in reversed(list(exc.build_log))
                    if isinstance(line, dict) and (line.get("error") or line.get("stream"))
                ),
                str(exc),
            )
            raise BuildFailed(target, f"docker build of {dockerfile} for {platform} failed: {last[:300]}") from exc
        except docker.errors.DockerException as exc:
            raise BuildFailed(target, f"docker build of {dockerfile} for {platform} failed: {str(exc)[:300]}") from exc
        wanted = platform.split("/")
        got = [image.attrs.get("Os"), image.attrs.get("Architecture")]
        if got != wanted[:2]:
            raise BuildFailed(target, f"docker built a {'/'.join(map(str, got))} image, not {platform}")
        tmp = archive.with_name(archive.name + ".part")
        with tmp.open("wb") as stream:
            for chunk in image.save(named=True):
                stream.write(chunk)
        os.replace(tmp, archive)
    return archive
