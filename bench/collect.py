"""Collecting artifacts from a build machine over SFTP, against OpenSSH scp.

Baseline: `scp` (OpenSSH) of the same files from the same sshd on the same
loopback, into an empty folder, in one connection (`host:work/*.deb`; one
`host:file` argument per file would cost scp a connection each). dropship: `collect()`, which reads the build
report and pulls every artifact it lists, checking each one's sha256. Each
side runs `rounds` times, alternating, and the best time counts. Prints
throughput for both and dropship's as a fraction of scp's.

    .venv/bin/python -m bench.collect [rounds]
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from dropship.builder import REPORT, ArtifactReport, BuildReport
from dropship.collect import collect
from dropship.machines import Machine
from tests.servers import RepoServerHost, start_repo_server

SHAPES = [(4, 20 << 20), (50, 200 << 10)]


def _artifacts(folder: Path, count: int, size: int) -> list[ArtifactReport]:
    folder.mkdir(parents=True)
    made = []
    for i in range(count):
        path = folder / f"pkg{i:03}_1.0_amd64.deb"
        data = os.urandom(size)
        path.write_bytes(data)
        made.append(ArtifactReport(path.name, str(path), size, hashlib.sha256(data).hexdigest()))
    return made


def _scp(server: RepoServerHost, base: Path, work: Path, into: Path) -> None:
    ep = server.endpoint
    subprocess.run([*server.scp(base), f"{ep.user}@{ep.host}:{work}/*.deb", f"{into}/"], check=True)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    base = Path(tempfile.mkdtemp(prefix="dropship-bench-collect-"))
    server = start_repo_server(base / "server")
    try:
        for count, size in SHAPES:
            work = server.root / f"work-{count}x{size}"
            artifacts = _artifacts(work, count, size)
            (work / REPORT).write_text(BuildReport("bench", "1.0", 0.0, tuple(artifacts), "").to_json())
            ep = server.endpoint
            machine = Machine(
                "bench",
                "bench",
                "local",
                (),
                ep.host,
                ep.port,
                ep.user,
                str(work),
                datetime.now(UTC),
                ep.host_public_key,
            )
            ours, theirs = [], []
            for n in range(rounds):
                into = base / f"ours-{count}-{n}"
                start = time.perf_counter()
                _, pulled = collect(machine, server.private_key, into)
                ours.append(time.perf_counter() - start)
                assert len(pulled) == count
                shutil.rmtree(into)
                into = base / f"scp-{count}-{n}"
                into.mkdir()
                start = time.perf_counter()
                _scp(server, base, work, into)
                theirs.append(time.perf_counter() - start)
                assert sorted(p.name for p in into.iterdir()) == sorted(a.name for a in artifacts)
                shutil.rmtree(into)
            total = count * size
            best_ours, best_theirs = min(ours), min(theirs)
            print(f"collect {count} x {size >> 10} KiB ({total / 1e6:.0f} MB), best of {rounds}:")
            print(f"  dropship collect (sha256 checked): {best_ours:.2f} s, {total / best_ours / 1e6:.0f} MB/s")
            print(f"  scp (baseline): {best_theirs:.2f} s, {total / best_theirs / 1e6:.0f} MB/s")
            print(f"  throughput ratio: {best_theirs / best_ours:.2f}x scp's")
            shutil.rmtree(work)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
