"""Publishing one new package to a repository of 200 over SSH, against OpenSSH scp.

Baseline: what the old scripts did, `scp -r` of the whole tree to the server
(OpenSSH, same sshd, same loopback). dropship: `SshPublisher.publish`, which
hard-links the 200 unchanged packages on the server and uploads only the new
one and the changed index, then checks and switches atomically. Each round
adds another package; both sides run `rounds` times, alternating, and the
best time counts (the machine is shared). Prints wall time and bytes sent for
both, and the ratios.

Every remote command (`exec`) runs through the user's login shell, which for
bash started by sshd reads `~/.bashrc`; scp's SFTP session runs no shell. On a
machine whose root `~/.bashrc` runs `pyenv init` (this one), each command costs
dozens of processes, a cost of that machine, not of dropship. `--no-bashrc`
restarts the bench's sshd with `SetEnv SHLVL=1` (bash then skips `~/.bashrc`)
to measure the transfer without it.

    .venv/bin/python -m bench.publish [packages] [kib-per-package] [rounds] [--no-bashrc]
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dropship.machines.sshd import find_sshd
from dropship.publish import SshPublisher
from tests.servers import RepoServerHost, start_repo_server


def _without_bashrc(server: RepoServerHost) -> None:
    """Restart the server's sshd so that bash, run by it, does not read ~/.bashrc."""
    server.stop()
    config = server.folder / "sshd_config"
    config.write_text(config.read_text() + "SetEnv SHLVL=1\n")
    log = server.folder / "sshd-no-bashrc.log"
    with log.open("wb") as out:
        server.process = subprocess.Popen(
            [find_sshd(), "-D", "-e", "-f", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection((server.endpoint.host, server.endpoint.port), timeout=1) as sock:
                if sock.recv(8).startswith(b"SSH-"):
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not come back: {log.read_text(errors='replace')[-500:]}") from None
            time.sleep(0.05)


def _tree(root: Path, count: int, size: int) -> Path:
    for i in range(count):
        path = root / "pool" / f"p{i:04}" / f"pkg{i:04}_1.0_amd64.deb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    (root / "dists/stable").mkdir(parents=True)
    (root / "dists/stable/InRelease").write_text("v1\n" * 200)
    return root


def main() -> None:
    no_bashrc = "--no-bashrc" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--no-bashrc"]
    count = int(args[0]) if len(args) > 0 else 200
    size = (int(args[1]) if len(args) > 1 else 100) * 1024
    rounds = int(args[2]) if len(args) > 2 else 5
    base = Path(tempfile.mkdtemp(prefix="dropship-bench-publish-"))
    server = start_repo_server(base / "server")
    if no_bashrc:
        _without_bashrc(server)
    ours, theirs = [], []
    try:
        publisher = SshPublisher(
            server.endpoint, server.private_key, str(server.root), mirror=base / "mirror", keep_releases=2
        )
        publisher.publish(_tree(base / "t0", count, size), "r0")
        ep = server.endpoint
        scp_command = server.scp(base)
        for n in range(1, rounds + 1):
            tree = base / f"t{n}"
            publisher.fetch_current(tree)
            extra = tree / f"pool/new{n}/new{n}_1.0_amd64.deb"
            extra.parent.mkdir(parents=True)
            extra.write_bytes(os.urandom(size))
            (tree / "dists/stable/InRelease").unlink()
            (tree / "dists/stable/InRelease").write_text(f"v{n}\n" * 200)

            start = time.perf_counter()
            result = publisher.publish(tree, f"r{n}")
            ours.append(time.perf_counter() - start)

            scp = [*scp_command, "-r", str(tree), f"{ep.user}@{ep.host}:{server.root}/scp-copy-{n}"]
            start = time.perf_counter()
            subprocess.run(scp, check=True)
            theirs.append(time.perf_counter() - start)
            shutil.rmtree(server.root / f"scp-copy-{n}")
            tree_bytes = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
            shutil.rmtree(base / f"t{n - 1}")
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    best_ours, best_theirs = min(ours), min(theirs)
    shell = "login shell without ~/.bashrc" if no_bashrc else "login shell as configured"
    print(
        f"add 1 package ({size // 1024} KiB) to {count}: repository of {tree_bytes / 1e6:.1f} MB, "
        f"best of {rounds}, {shell}"
    )
    print(
        f"  dropship publish: {best_ours:.2f} s, {result.bytes_uploaded / 1e3:.0f} kB sent "
        f"({result.uploaded} files sent, {result.reused} hard-linked on the server)"
    )
    print(f"  scp -r (baseline): {best_theirs:.2f} s, {tree_bytes / 1e3:.0f} kB sent")
    print(f"  ratio: time {best_ours / best_theirs:.2f}x, bytes {result.bytes_uploaded / tree_bytes:.4f}x")
    print(f"  (all rounds: dropship {' '.join(f'{t:.2f}' for t in ours)}; scp {' '.join(f'{t:.2f}' for t in theirs)})")


if __name__ == "__main__":
    main()
