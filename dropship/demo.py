"""The example project as a tagged git repository, for the demo and the tests."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from dropship.errors import ConfigError
from dropship.process import run

GIT_IDENTITY = ["-c", "user.name=dropship demo", "-c", "user.email=demo@example.invalid"]
DEMO_INDEX = "demo-index"
DEMO_INDEX_CREDENTIALS = "hello-demo-index"
_WHEEL_PACKAGES = re.compile(r'^(packages = \[\{ kind = "wheel", glob = "[^"]+")( \}\])$', re.MULTILINE)


def publish_wheels_to(url: str) -> Callable[[str], str]:
    """A manifest edit: the example's wheels go to the index at `url` ([[registries]] `demo-index`)."""

    def edit(text: str) -> str:
        edited, count = _WHEEL_PACKAGES.subn(rf'\1, registry = "{DEMO_INDEX}"\2', text)
        if count == 0:
            raise ConfigError("the example's manifest has no wheel `packages` line for the demo's index to take")
        return (
            edited.rstrip("\n")
            + f'\n\n# Added by `dropship demo`: its local package index.\n[[registries]]\nname = "{DEMO_INDEX}"\n'
            + f'kind = "pypi"\nurl = "{url}"\ncredentials = "{DEMO_INDEX_CREDENTIALS}"\n'
        )

    return edit


def example_source() -> Path:
    """examples/hello as installed: the `examples` package ships it, in a wheel
    as in a checkout, so `pip install dropship && dropship demo` works."""
    path = Path(str(resources.files("examples"))) / "hello"
    if not (path / "dropship.toml").exists():
        raise ConfigError(f"the example project is not at {path}: reinstall dropship (pip install .)")
    return path


def prepare_repository(
    destination: Path, tag: str, source: Path | None = None, manifest_edit: Callable[[str], str] | None = None
) -> Path:
    """Copy the example into a git repository at `destination` and tag HEAD `tag`.

    Re-running with the same folder keeps its history; a changed example is
    committed first, so the tag always names what is in the folder.
    `manifest_edit` rewrites dropship.toml before that commit (the demo names
    its local package index there).
    """
    source = source or example_source()
    if not (destination / ".git").exists():
        destination.mkdir(parents=True, exist_ok=True)
        run(["git", "init", "-q", "-b", "main", str(destination)], what="git init")
    for item in source.iterdir():
        if item.name in {"out", "build"}:
            continue
        target = destination / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    if manifest_edit is not None:
        manifest = destination / "dropship.toml"
        manifest.write_text(manifest_edit(manifest.read_text()))
    git = ["git", *GIT_IDENTITY, "-C", str(destination)]
    run([*git, "add", "-A"], what="git add")
    if run([*git, "status", "--porcelain"], what="git status").strip():
        run([*git, "commit", "-q", "-m", "example project"], what="git commit")
    existing = run([*git, "tag", "--list", tag], what="git tag").strip()
    if not existing:
        run([*git, "tag", "-a", tag, "-m", f"release {tag}"], what="git tag")
    return destination
