"""Small, valid .deb files written directly (dpkg-deb is ~10 ms a package,
too slow to make 10,000 of them for a benchmark). The layout is the one
dpkg-deb writes: an ar archive of debian-binary, control.tar.gz, data.tar.gz."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1700000000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = [b"!<arch>\n"]
    for name, data in members:
        header = f"{name:<16}{1700000000:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        out.append(header + data + (b"\n" if len(data) % 2 else b""))
    return b"".join(out)


def write_deb(folder: Path, package: str, version: str, arch: str = "amd64") -> Path:
    control = (
        f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
        "Maintainer: bench <bench@example.invalid>\nSection: misc\nPriority: optional\n"
        f"Description: synthetic package {package}\n benchmark input\n"
    ).encode()
    data = _tar_gz({f"./usr/share/doc/{package}/README": f"{package} {version}\n".encode()})
    deb = _ar([("debian-binary", b"2.0\n"), ("control.tar.gz", _tar_gz({"./control": control})), ("data.tar.gz", data)])
    path = folder / f"{package}_{version}_{arch}.deb"
    path.write_bytes(deb)
    return path


def write_debs(folder: Path, count: int, version: str = "1.0") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_deb(folder, f"pkg{i:05d}", version) for i in range(count)]


if __name__ == "__main__":
    import sys
    import tempfile

    start = time.perf_counter()
    paths = write_debs(Path(tempfile.mkdtemp()), int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
    print(f"{len(paths)} debs in {time.perf_counter() - start:.2f} s")
