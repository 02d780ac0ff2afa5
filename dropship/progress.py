"""What a person reads while a release runs, and how it ends.

The flow and its tasks log ordinary messages (they go to the Prefect UI and
the run's log file) and mark the few that matter with an event in the log
record's `extra` (`progress.event(...)`). The CLI attaches a `Reporter` to
the run loggers and prints one line per marked record: one per stage and
per target, nothing of Prefect's own chatter. The release's closing lines
(repository, apt and dnf) are built here for both `dropship release` and
`dropship demo`.
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Mapping
from typing import Any, TextIO

EVENT = "dropship_event"
MARKS = {"ok": "✓", "failed": "✗", "skipped": "-", "running": "…", "warning": "!"}


def event(step: str, status: str = "ok", *, name: str = "", seconds: float | None = None) -> dict[str, Any]:
    """`extra=` for a log call that the CLI shows as one line: `✓ build amd64-deb 12.3 s - message`."""
    return {EVENT: {"step": step, "status": status, "name": name, "seconds": seconds}}


def tidy_reason(target: str, reason: str) -> str:
    """A failed target's reason without the wrappers each layer added (the cause stays, once),
    its output lines indented under it."""
    for noise in (f"target {target}: ", "Flow run encountered an exception: ", "BuildFailed: "):
        reason = reason.replace(noise, "")
    first, *rest = reason.strip().splitlines() or [""]
    return "\n".join([first, *(f"    {line}" for line in rest)])


def format_line(fields: Mapping[str, Any], message: str) -> str:
    mark = MARKS.get(str(fields.get("status")), "·")
    head = " ".join(str(p) for p in (fields.get("step"), fields.get("name")) if p)
    seconds = fields.get("seconds")
    if seconds is not None:
        head += f" {float(seconds):.1f} s"
    return f"{mark} {head}" + (f": {message}" if message else "")


class Reporter(logging.Handler):
    """Prints the records that carry an event, one line each."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, EVENT, None)
        if not isinstance(fields, Mapping):
            return
        line = format_line(fields, record.getMessage())
        self.lines.append(line)
        stream = self.stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()


def closing_lines(
    summary: Mapping[str, Any], *, key_name: str, component: str, summary_path: str, provider: str = ""
) -> list[str]:
    """The end of a published release: what, where, and the apt and dnf lines to use it."""
    project, version = summary["project"], summary["version"]
    suite = summary["suites"][0]
    url = str(summary.get("url") or "")
    local = url.startswith("file://")
    root = url[len("file://") :] if local else url.rstrip("/")
    apt_url = f"file:{root}" if local else root
    keyring = f"/etc/apt/keyrings/{project}-{key_name}.gpg"
    count = int(summary["machines_created"])
    machines = f" with {count} {provider + ' ' if provider else ''}machine{'' if count == 1 else 's'}"
    names = [str(a["name"]) for t in summary.get("targets", []) for a in t.get("artifacts", [])]
    debs, rpms = any(n.endswith(".deb") for n in names), any(n.endswith(".rpm") for n in names)
    cost = f" (${summary['cost']:.4f})" if summary.get("cost") else ""
    if local:
        get_key = f"sudo install -D -m 0644 {root}/keys/{key_name}.gpg {keyring}"
        get_repo = f"sudo cp {root}/rpm/{suite}.repo /etc/yum.repos.d/{project}-{suite}.repo"
    else:
        get_key = f"curl -fsSL {root}/keys/{key_name}.gpg | sudo install -D -m 0644 /dev/stdin {keyring}"
        get_repo = f"sudo curl -fsSL -o /etc/yum.repos.d/{project}-{suite}.repo {root}/rpm/{suite}.repo"
    source = shlex.quote(f"deb [signed-by={keyring}] {apt_url} {suite} {component}")
    lines = [
        (
            f"Published {project} {summary['name']} ({summary['release_class']}, suites {', '.join(summary['suites'])}) "
            f"in {summary['wall_seconds']:.1f} s{machines}{cost}."
        ),
        f"Repository: {root}",
        f"Summary:    {summary_path}",
    ]
    if debs or not rpms:
        lines += [
            "",
            "apt (Debian/Ubuntu):",
            f"  {get_key}",
            f"  echo {source} | sudo tee /etc/apt/sources.list.d/{project}.list",
            f"  sudo apt-get update && sudo apt-get install {project}={version}",
        ]
    if rpms:
        lines += ["", "dnf (Fedora/RHEL):", f"  {get_repo}", f"  sudo dnf install {project}-{version}"]
    published = summary.get("language_packages") or []
    if published:
        lines += ["", "Language packages:"]
        lines += [f"  {p['file']} -> {p['registry']} ({p['status']})" for p in published]
    image = summary.get("image")
    if image:  # format = "oci" targets: the index and each platform's image (dropship/oci.py)
        tags = ", ".join(image["tags"]) if image.get("tagged") else "no tag moved"
        lines += [
            "",
            f"image (tags {tags}):",
            f"  {image['repository']}@{image['digest']}",
            *(f"  {platform}: {digest}" for platform, digest in sorted(image["platforms"].items())),
            f"  docker pull {image['repository']}:{image['tags'][0]}",
        ]
    return lines
