"""RPM metadata: createrepo_c full vs --update after adding one RPM, same run.

    python -m bench.rpm_index [--count 1000]

Makes `count` distinct real RPMs of 200 KB random payload each with one
rpmbuild run (one spec, many subpackages), indexes them with `createrepo_c`, adds one RPM, then times
`createrepo_c --update` (what dropship runs) against a full `createrepo_c`
of the same folder. Also times dropship's whole add-one path
(RpmRepository.add: rpmsign, retention, createrepo_c --update, repomd.xml.asc).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from dropship.repos.rpm import RpmRepository
from dropship.signing import Signer, generate_key

PAYLOAD = 200 * 1024  # bytes of random data per package: checksumming is what --update saves


def build_rpms(count: int, out: Path, prefix: str = "bench") -> list[Path]:
    top = out.parent / f"rpmbuild-{prefix}"
    (top / "SPECS").mkdir(parents=True)
    lines = [
        f"Name: {prefix}-base",
        "Version: 1.0",
        "Release: 1",
        "Summary: synthetic",
        "License: MIT",
        "%description",
        "synthetic",
        "%install",
        f"for i in $(seq -f %05g 0 {count - 1}); do d=%{{buildroot}}/usr/share/{prefix}$i; mkdir -p $d; "
        f"head -c {PAYLOAD} /dev/urandom > $d/blob; done",
        "%files",
    ]
    for i in range(count):
        lines += [
            f"%package -n {prefix}{i:05d}",
            f"Summary: synthetic package {i}",
            f"%description -n {prefix}{i:05d}",
            "benchmark input",
            f"%files -n {prefix}{i:05d}",
            f"/usr/share/{prefix}{i:05d}/blob",
        ]
    (top / "SPECS/bench.spec").write_text("\n".join(lines) + "\n")
    subprocess.run(
        [
            "rpmbuild",
            "--quiet",
            "--define",
            f"_topdir {top}",
            "--define",
            f"_rpmdir {out}",
            "--define",
            "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
            "--define",
            "debug_package %{nil}",
            "--define",
            "__os_install_post %{nil}",
            "--define",
            "_binary_payload w0.ufdio",
            "-bb",
            str(top / "SPECS/bench.spec"),
        ],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(top)
    return sorted(p for p in out.glob("*.rpm") if not p.name.startswith(f"{prefix}-base"))


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dropship-bench-rpm-"))
    try:
        start = time.perf_counter()
        rpms = build_rpms(args.count, work / "built")
        newcomer = build_rpms(1, work / "built-new", prefix="newcomer")[0]
        print(f"made {len(rpms)} RPMs in {time.perf_counter() - start:.1f} s")

        repo = work / "plain"
        repo.mkdir()
        for rpm in rpms:
            shutil.copy(rpm, repo)
        initial = timed(["createrepo_c", "--quiet", str(repo)])
        shutil.copy(newcomer, repo)
        update = timed(["createrepo_c", "--quiet", "--update", str(repo)])
        shutil.rmtree(repo / "repodata")
        full = timed(["createrepo_c", "--quiet", str(repo)])
        print(
            f"createrepo_c full of {args.count}: {initial:.2f} s; after adding one: "
            f"--update {update:.2f} s vs full {full:.2f} s: {update / full:.2f}x"
        )

        with Signer([generate_key("bench", "bench@example.invalid")]) as signer:
            ours = RpmRepository(work / "dropship", keep_versions=3)
            start = time.perf_counter()
            ours.add("stable", rpms, signer, "bench")
            first = time.perf_counter() - start
            start = time.perf_counter()
            ours.add("stable", [newcomer], signer, "bench")
            one = time.perf_counter() - start
        print(
            f"dropship RpmRepository.add: {args.count} RPMs {first:.2f} s (rpmsign of each included); "
            f"one more {one:.2f} s ({one / full:.2f}x a bare full createrepo_c)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
