"""Build the example's wheel with the standard library only (PEP 427), so a
machine needs nothing but python3: build_wheel.py OUT_DIR.

The version comes from DROPSHIP_VERSION, turned into PEP 440 (1.5.0~rc1 ->
1.5.0rc1, 0~dev20261122181500.gabc1234 -> 0.dev20261122181500); file dates
come from SOURCE_DATE_EPOCH, so a rebuild of the same commit is byte-identical.
"""

import base64
import hashlib
import os
import re
import sys
import time
import zipfile
from pathlib import Path

NAME = "hello_dropship"


def pep440(version: str) -> str:
    dev = re.fullmatch(r"0~dev(\d+)\.g[0-9a-f]+", version)
    if dev:
        return f"0.dev{dev.group(1)}"
    return version.replace("~", "").replace("-", ".")


def main() -> None:
    out = Path(sys.argv[1])
    version = pep440(os.environ["DROPSHIP_VERSION"])
    stamp = time.gmtime(max(int(os.environ.get("SOURCE_DATE_EPOCH", "315532800")), 315532800))[:6]
    here = Path(__file__).parent
    dist_info = f"{NAME}-{version}.dist-info"
    files = {
        f"{NAME}/__init__.py": (here / NAME / "__init__.py").read_bytes(),
        f"{NAME}/_version.py": f'VERSION = "{version}"\n'.encode(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: hello-dropship\nVersion: {version}\n"
            "Summary: the dropship example's Python package\nRequires-Python: >=3.8\n"
        ).encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hello build_wheel.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / f"{NAME}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    print(wheel.name)


if __name__ == "__main__":
    main()
