"""A project nobody here wrote, made by the tests, and the installed `dropship`
command run as a user types it (a subprocess, no terminal)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dropship.demo import GIT_IDENTITY

DROPSHIP = str(Path(sys.executable).parent / "dropship")

BUILD_DEB = r"""#!/bin/sh
# Builds $1_$DROPSHIP_VERSION_amd64.deb: /usr/bin/$1 prints its version and what it was built with.
set -eu
name=$1
root=pkg-$name
rm -rf "$root" && mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/$name" out
printf '#!/bin/sh\necho "%s %s"\n' "$name" "$DROPSHIP_VERSION" > "$root/usr/bin/$name"
chmod 755 "$root/usr/bin/$name"
if [ -n "${DROPSHIP_DEPS:-}" ]; then
    (cd "$DROPSHIP_DEPS" && find . -type f | sort) > "$root/usr/share/$name/built-with"
fi
cat > "$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $DROPSHIP_VERSION
Architecture: amd64
Maintainer: Tiny <tiny@example.invalid>
Description: $name prints its version
CONTROL
dpkg-deb --root-owner-group --build "$root" "out/${name}_${DROPSHIP_VERSION}_amd64.deb" >/dev/null
"""


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


# A build image's tool (tests/flows/test_release_container.py, test_droplets.py): the host and the
# machines lack it, so a build that runs it works only inside the image.
TOOL = "/usr/local/bin/dropship-stamp"
STAMP = r"""#!/bin/sh
# dropship-stamp FILE: what the build got, written by a tool only the build image has
set -eu
{
    echo "version=$DROPSHIP_VERSION"
    echo "epoch=$SOURCE_DATE_EPOCH"
    echo "target=$DROPSHIP_TARGET"
    echo "deps=$(cd "$DROPSHIP_DEPS" && find . -type f | sort | tr '\n' ' ')"
    touch "$HOME/.stamp" && rm "$HOME/.stamp" && echo "home=writable"  # the path differs per machine
    echo "flavour=$STAMP_FLAVOUR"
    echo "path=$PATH"
    echo "lang=${LANG:-}"
} > "$1"
"""
BUILD_STAMP = r"""#!/bin/sh
set -eu
root=pkg-stamp
rm -rf "$root" out && mkdir -p "$root/DEBIAN" "$root/usr/share/stamp" out
dropship-stamp "$root/usr/share/stamp/built-in"
cat > "$root/DEBIAN/control" <<CONTROL
Package: stamp
Version: $DROPSHIP_VERSION
Architecture: amd64
Maintainer: Tiny <tiny@example.invalid>
Description: stamp records how it was built
CONTROL
dpkg-deb --root-owner-group --build "$root" "out/stamp_${DROPSHIP_VERSION}_amd64.deb" >/dev/null
"""


def dropship(*argv: str, cwd: Path, env: dict[str, str]) -> Done:
    """`dropship ARGV` in `cwd`, stdin not a terminal."""
    done = subprocess.run(
        [DROPSHIP, *argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return Done(done.returncode, done.stdout, done.stderr)


def git(repo: Path, *argv: str) -> None:
    subprocess.run(["git", *GIT_IDENTITY, "-C", str(repo), *argv], check=True, capture_output=True)


def make_project(folder: Path) -> Path:
    """A git repository with build.sh (a .deb from a shell script) and a test script."""
    folder.mkdir(parents=True)
    (folder / "build.sh").write_text(BUILD_DEB)
    (folder / "test.sh").write_text('#!/bin/sh\ntouch "${TEST_MARKER:-/dev/null}"\necho all good\n')
    git(folder, "init", "-q", "-b", "main")
    git(folder, "add", ".")
    git(folder, "commit", "-qm", "tiny project")
    return folder


def env_for(api_url: str, home: Path) -> dict[str, str]:
    (home / "prefect-client").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=api_url, DROPSHIP_HOME=str(home), PREFECT_HOME=str(home / "prefect-client"))
    return env
