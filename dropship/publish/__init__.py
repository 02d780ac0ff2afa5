"""Atomic publication: `releases/<id>/` plus one rename of the `current` symlink.

    <root>/releases/<id>/                 a complete repository tree, never edited after the switch
    <root>/releases/<id>/.dropship/release.json   its listing (sha256 and size of every file)
    <root>/current -> releases/<id>

A publication fills a hidden `releases/.incoming-<id>/` (files unchanged since
the current release are hard links to it, so only new files take space and,
on a remote server, only new files cross the network), checks it, renames it
to `releases/<id>`, then renames a fresh symlink over `current`. A reader
(nginx, apt) therefore sees either the whole previous release or the whole
new one. Anything that fails before the rename leaves `current` untouched;
the next publication sweeps the leftover.

`LocalPublisher` publishes into a folder of this machine, `SshPublisher` to
a repository server over SSH (paramiko, pinned host key).
"""

from __future__ import annotations

from dropship.publish.base import (
    CURRENT,
    INCOMING_PREFIX,
    RELEASES,
    Progress,
    Publisher,
    PublishResult,
    rollback_target,
)
from dropship.publish.local import LocalPublisher, hardlink_tree
from dropship.publish.ssh import SshPublisher

__all__ = [
    "CURRENT",
    "INCOMING_PREFIX",
    "RELEASES",
    "LocalPublisher",
    "Progress",
    "PublishResult",
    "Publisher",
    "SshPublisher",
    "hardlink_tree",
    "rollback_target",
]
