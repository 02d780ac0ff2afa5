"""APT indexing + signing: dropship vs apt-ftparchive + gpg on the same tree.

    python -m bench.apt_index [--sizes 1000 10000]

For each size, synthetic .debs are laid out in a Debian pool, and two
hard-linked copies of that tree are indexed and signed: one by dropship's
AptRepository.add (control data via python-debian, SHA256/SHA512,
Packages{,.gz,.xz}, Release with by-hash, InRelease, Release.gpg), one by
`apt-ftparchive packages` + `apt-ftparchive release` + `gpg --clearsign` and
`gpg -abs` with the same key, compressed with the same helpers. Each figure is
the best of three alternating rounds. Then one new package is added to the
largest repository, against its full index time.
Goals: full index <= 1.0x the baseline; one added package <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.synthetic import write_deb, write_debs
from dropship.publish import hardlink_tree
from dropship.repos.apt import AptRepository, AptSettings, pool_path
from dropship.repos.files import gzip_bytes, xz_bytes
from dropship.signing import Signer, generate_key

SETTINGS = AptSettings(origin="bench", label="bench", component="main", architectures=("amd64",), keep_versions=3)
ROUNDS = 3


def pool_tree(size: int, root: Path) -> None:
    """A tree whose pool holds `size` packages, as apt-ftparchive expects to find them."""
    incoming = write_debs(root.parent / f"incoming-{size}", size)
    for deb in incoming:
        target = root / pool_path("main", deb.name.split("_")[0], deb.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(deb, target)


def dropship_index(root: Path, signer: Signer) -> float:
    debs = sorted(root.glob("pool/**/*.deb"))
    start = time.perf_counter()
    AptRepository(root, SETTINGS).add("stable", debs, signer)
    return time.perf_counter() - start


def baseline_index(root: Path, signer: Signer) -> float:
    gpg = [
        "gpg",
        "--homedir",
        str(signer.gnupghome),
        "--batch",
        "--yes",
        "--digest-algo",
        "SHA512",
        "-u",
        signer.fingerprints[0],
    ]
    start = time.perf_counter()
    binary = root / "dists/stable/main/binary-amd64"
    binary.mkdir(parents=True)
    packages = subprocess.run(["apt-ftparchive", "packages", "pool"], cwd=root, check=True, capture_output=True).stdout
    (binary / "Packages").write_bytes(packages)
    (binary / "Packages.gz").write_bytes(gzip_bytes(packages))
    (binary / "Packages.xz").write_bytes(xz_bytes(packages))
    release = subprocess.run(
        [
            "apt-ftparchive",
            "-o",
            "APT::FTPArchive::Release::Origin=bench",
            "-o",
            "APT::FTPArchive::Release::Suite=stable",
            "-o",
            "APT::FTPArchive::Release::Architectures=amd64",
            "-o",
            "APT::FTPArchive::Release::Components=main",
            "-o",
            "APT::FTPArchive::Release::MD5=false",
            "-o",
            "APT::FTPArchive::Release::SHA1=false",
            "release",
            "dists/stable",
        ],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout
    (root / "dists/stable/Release").write_bytes(release)
    subprocess.run([*gpg, "--clearsign", "-o", "dists/stable/InRelease", "dists/stable/Release"], cwd=root, check=True)
    subprocess.run([*gpg, "-abs", "-o", "dists/stable/Release.gpg", "dists/stable/Release"], cwd=root, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dropship-bench-apt-"))
    try:
        with Signer([generate_key("bench", "bench@example.invalid")]) as signer:
            print(f"{'packages':>9} {'dropship s':>11} {'apt-ftparchive+gpg s':>21} {'ratio':>6}")
            largest: tuple[int, Path, float] | None = None
            for size in args.sizes:
                source = work / f"tree-{size}"
                pool_tree(size, source)
                ours_runs, theirs_runs = [], []
                for round_ in range(ROUNDS):
                    ours_root, theirs_root = work / f"ours-{size}-{round_}", work / f"theirs-{size}-{round_}"
                    hardlink_tree(source, ours_root)
                    hardlink_tree(source, theirs_root)
                    ours_runs.append(dropship_index(ours_root, signer))
                    theirs_runs.append(baseline_index(theirs_root, signer))
                ours, theirs = min(ours_runs), min(theirs_runs)
                verdict = "ok" if ours <= theirs else "over goal (1.0x)"
                print(f"{size:>9} {ours:>11.2f} {theirs:>21.2f} {ours / theirs:>5.2f}x  {verdict}")
                largest = (size, work / f"ours-{size}-0", ours)
            assert largest is not None
            size, root, full = largest
            extra = write_deb(work, "newcomer", "1.0")
            start = time.perf_counter()
            AptRepository(root, SETTINGS).add("stable", [extra], signer)
            one = time.perf_counter() - start
            verdict = "ok" if one <= 1.0 else "over goal (1 s)"
            print(f"add 1 package to {size}: {one:.2f} s vs its full index {full:.2f} s: {one / full:.3f}x  {verdict}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
