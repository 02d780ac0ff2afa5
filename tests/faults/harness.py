"""What the fault tests share: releasing into a publisher from another process,
finding leftover processes, and the example manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dropship.manifest import Manifest, load_manifest
from dropship.publish import Publisher
from dropship.repos.index import IndexedRelease, load_index
from dropship.repos.tree import sign_and_index
from dropship.signing import Signer
from tests.support import processes

if TYPE_CHECKING:
    from tests.servers import RepoServerHost

SLOW_SIGNING = 2.0
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"


def example_manifest() -> Manifest:
    return load_manifest(EXAMPLE / "dropship.toml")


def stable_release(release_id: str, version: str) -> IndexedRelease:
    """The index entry of a stable release of the example's amd64-deb target."""
    return IndexedRelease(
        id=release_id,
        name=f"v{version}",
        release_class="stable",
        version=version,
        commit="0" * 40,
        date="2026-01-01 00:00 UTC",
        suites=["stable"],
        targets=["amd64-deb"],
    )


def release_into(
    publisher: Publisher, work: Path, release_id: str, version: str, deb: Path, key: str, *, kill_at: str | None = None
) -> None:
    """What `sign_and_publish` does, for one .deb: under the lock, start from `current`,
    add the package, sign, publish. `kill_at` ("signing", "staged", "upload"): SIGKILL
    this process there, as a dead orchestrator."""
    manifest = example_manifest()
    tree = work / "tree"
    with publisher.locked(f"test {release_id}"):
        publisher.fetch_current(tree)
        time.sleep(SLOW_SIGNING)  # a signing that takes a while: the other release starts meanwhile
        release = stable_release(release_id, version)
        with Signer([key], home=work / "gnupg") as signer:
            if kill_at == "signing":
                signer.clearsign(b"start the agent")
                os.kill(os.getpid(), signal.SIGKILL)
            sign_and_index(tree, manifest, release, {"amd64-deb": [deb]}, signer, base_url="http://127.0.0.1/")

        def progress(step: str, done: int, total: int) -> None:
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        publisher.publish(tree, release_id, progress=progress)


def published_versions(current: Path) -> set[str]:
    """Versions of hello in the served APT index of suite stable."""
    text = (current / "dists/stable/main/binary-amd64/Packages").read_text()
    return {line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Version: ")}


def indexed_releases(current: Path) -> set[str]:
    return {r.id for r in load_index(current)}


def agents_of(home: Path) -> list[int]:
    """gpg-agent (or other gpg daemons) processes whose homedir is `home`."""
    needle = str(home).encode()
    return [
        pid
        for pid, cmdline, environ in processes()
        if (b"gpg-agent" in cmdline or b"keyboxd" in cmdline or b"scdaemon" in cmdline)
        and (needle in cmdline or b"GNUPGHOME=" + needle in environ)
    ]


def publisher_from(spec: dict[str, str]) -> Publisher:
    from dropship.publish import LocalPublisher, SshPublisher
    from dropship.ssh import Endpoint

    if spec["kind"] == "local":
        return LocalPublisher(Path(spec["root"]), keep_releases=10)
    return SshPublisher(
        Endpoint(spec["host"], int(spec["port"]), spec["user"], spec["host_key"]),
        spec["private_key"],
        spec["root"],
        mirror=Path(spec["mirror"]),
        keep_releases=10,
    )


def spawn_release(
    spec: dict[str, str], work: Path, release_id: str, version: str, deb: Path, key: str, kill_at: str | None = None
) -> subprocess.Popen[str]:
    """`release_into` in a new process (an orchestrator of its own)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "key.asc").write_text(key)
    args = json.dumps(
        {
            "spec": spec,
            "work": str(work),
            "release_id": release_id,
            "version": version,
            "deb": str(deb),
            "kill_at": kill_at,
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults.harness", args],
        cwd=EXAMPLE.parents[1],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def ssh_spec(server: RepoServerHost, mirror: Path) -> dict[str, str]:
    return {
        "kind": "ssh",
        "host": server.endpoint.host,
        "port": str(server.endpoint.port),
        "user": server.endpoint.user,
        "host_key": server.endpoint.host_public_key,
        "private_key": server.private_key,
        "root": str(server.root),
        "mirror": str(mirror),
    }


if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    work = Path(job["work"])
    release_into(
        publisher_from(job["spec"]),
        work,
        job["release_id"],
        job["version"],
        Path(job["deb"]),
        (work / "key.asc").read_text(),
        kill_at=job["kill_at"],
    )
    print("published", job["release_id"])
