"""The public side of the signing keys, published next to the repositories.

`keys/<name>.asc` (armored) and `keys/<name>.gpg` (binary keyring for apt's
Signed-By) hold every key that signs; during a rotation each key is also
published alone as `keys/<fingerprint>.asc` and `.gpg`. `<project>.sources`
is a deb822 snippet pointing apt at the keyring, so users never need
`apt-key` or a trust-everything keyring.
"""

from __future__ import annotations

from pathlib import Path

from dropship.repos.files import write_atomic
from dropship.signing import Signer


def publish_keys(root: Path, name: str, signer: Signer) -> tuple[Path, Path]:
    armored = root / "keys" / f"{name}.asc"
    binary = root / "keys" / f"{name}.gpg"
    write_atomic(armored, signer.public_key_armored().encode())
    write_atomic(binary, signer.public_key_binary())
    for fingerprint in signer.fingerprints:
        write_atomic(root / "keys" / f"{fingerprint}.asc", signer.public_key_armored(fingerprint).encode())
        write_atomic(root / "keys" / f"{fingerprint}.gpg", signer.public_key_binary(fingerprint))
    return armored, binary


def sources_snippet(project: str, base_url: str, suites: list[str], component: str, keyring_path: str) -> str:
    """deb822 sources for apt (`/etc/apt/sources.list.d/<project>.sources`)."""
    return (
        "Types: deb\n"
        f"URIs: {base_url.rstrip('/')}/\n"
        f"Suites: {' '.join(suites)}\n"
        f"Components: {component}\n"
        f"Signed-By: {keyring_path}\n"
    )


def write_sources(root: Path, project: str, base_url: str, suites: list[str], component: str, key_name: str) -> Path:
    path = root / f"{project}.sources"
    keyring = f"/etc/apt/keyrings/{project}-{key_name}.gpg"
    write_atomic(path, sources_snippet(project, base_url, suites, component, keyring).encode())
    return path
