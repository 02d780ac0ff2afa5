"""Publishing one new package to a repository of 200 over SSH, against OpenSSH scp.

Baseline: what the old scripts did, `scp -r` of the whole tree to the server
(OpenSSH, same sshd, same loopback). dropship: `SshPublisher.publish`, which
hard-links the 200 unchanged packages on the server and uploads only the new
one and the changed index, then checks and switches atomically. Prints wall
time and bytes sent for both, and the ratios.

    .venv/bin/python -m bench.publish [packages] [kib-per-package]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dropship.deploy import SshPublisher
from tests.servers import start_repo_server


def _tree(root: Path, count: int, size: int) -> Path:
    for i in range(count):
        path = root / "pool" / f"p{i:04}" / f"pkg{i:04}_1.0_amd64.deb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    (root / "dists/stable").mkdir(parents=True)
    (root / "dists/stable/InRelease").write_text("v1\n" * 200)
    return root


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    size = (int(sys.argv[2]) if len(sys.argv) > 2 else 100) * 1024
    base = Path(tempfile.mkdtemp(prefix="dropship-bench-publish-"))
    server = start_repo_server(base / "server")
    try:
        publisher = SshPublisher(server.endpoint, server.private_key, str(server.root), mirror=base / "mirror")
        publisher.publish(_tree(base / "t1", count, size), "r1")
        second = base / "t2"
        publisher.fetch_current(second)
        extra = second / "pool/new/new_1.0_amd64.deb"
        extra.parent.mkdir(parents=True)
        extra.write_bytes(os.urandom(size))
        (second / "dists/stable/InRelease").unlink()
        (second / "dists/stable/InRelease").write_text("v2\n" * 200)

        start = time.perf_counter()
        result = publisher.publish(second, "r2")
        ours = time.perf_counter() - start

        key = base / "client_key"
        key.write_text(server.private_key)
        key.chmod(0o600)
        known = base / "known_hosts"
        ep = server.endpoint
        known.write_text(f"[{ep.host}]:{ep.port} {ep.host_public_key}\n")
        scp = ["scp", "-q", "-r", "-P", str(ep.port), "-i", str(key), "-o", f"UserKnownHostsFile={known}",
               "-o", "BatchMode=yes", str(second), f"{ep.user}@{ep.host}:{server.root}/scp-copy"]
        start = time.perf_counter()
        subprocess.run(scp, check=True)
        theirs = time.perf_counter() - start
        tree_bytes = sum(p.stat().st_size for p in second.rglob("*") if p.is_file())
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"add 1 package ({size // 1024} KiB) to {count}: repository of {tree_bytes / 1e6:.1f} MB")
    print(f"  dropship publish: {ours:.2f} s, {result.bytes_uploaded / 1e3:.0f} kB sent "
          f"({result.uploaded} files sent, {result.reused} hard-linked on the server)")
    print(f"  scp -r (baseline): {theirs:.2f} s, {tree_bytes / 1e3:.0f} kB sent")
    print(f"  ratio: time {ours / theirs:.2f}x, bytes {result.bytes_uploaded / tree_bytes:.4f}x")


if __name__ == "__main__":
    main()
