"""Publication to a repository server over SSH.

Only the orchestrator's side needs software: the server needs OpenSSH's sshd
with its SFTP server (for `hardlink@openssh.com`), a POSIX shell, coreutils
(`cp`, `ln`, `mv`, `rm`, `sha256sum`, `xargs`) and util-linux `flock`. Every
remote command is a fixed script with its arguments quoted; lists of paths go
over stdin (or SFTP), so no published file name is ever parsed by the remote
shell.

A publication holds `flock <root>/.lock` on the server for its whole
duration through one SSH channel: the lock ends with the connection, so an
orchestrator that dies mid-upload leaves no stale lock, only an
`.incoming-*` folder that the next publication sweeps.

The orchestrator keeps a content-addressed mirror of what it last saw
published (`<mirror>/objects/<sha256>`): the next release's tree is seeded
from it by hard links, and files it lacks (another orchestrator published)
are the only ones downloaded.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from dropship.errors import DropshipError, MachineError, PublishError, TransferError
from dropship.publish.base import (
    BEEN_CURRENT,
    CURRENT,
    INCOMING_PREFIX,
    LOCK_FILE,
    RELEASES,
    Progress,
    PublishResult,
    check_release_id,
    prune_candidates,
    rollback_target,
)
from dropship.publish.listing import META_DIR, META_FILE, Listing, list_tree
from dropship.ssh import (
    Endpoint,
    Expected,
    Hardlink,
    Mkdir,
    Operation,
    SshSession,
    Started,
    Symlink,
    Upload,
    ssh_errors,
)

# Each remote command costs a session on the server (about 0.1 s with OpenSSH,
# more on a busy one), so a publication uses two: the lock (which also sweeps
# leftovers) and the stage-check-and-switch, which is started together with the
# lock and waits for its input. Folders, new files, symlinks and the listing go
# as SFTP requests pipelined on one channel; the unchanged files are hard-linked
# by one `cp -l` on the server (an SFTP hard link each would cost a reply each).
_LOCK = (
    'mkdir -p -- "$1/' + RELEASES + '" && exec 9>>"$1/' + LOCK_FILE + '" || exit 1\n'
    'flock -n 9 || { echo "busy $(cat "$1/' + LOCK_FILE + '-holder" 2>/dev/null)"; flock -w "$2" 9 || exit 1; }\n'
    'printf "%s\\n" "$3" >"$1/' + LOCK_FILE + '-holder"; cd "$1/' + RELEASES + '" || exit 1\n'
    "for d in " + INCOMING_PREFIX + '*; do [ -d "$d" ] && rm -rf -- "$d"; done\n'
    "echo locked; exec cat >/dev/null"
)
# stdin, once the new files are uploaded: `go`; the current release; the
# releases to prune, one a line, and an empty line; the `sha256  path` lines
# of the uploaded files and an empty line; then, NUL-separated, the files of
# the current release to hard-link at the same path into the staged one. An
# EOF before `go` (the publication failed) exits without doing anything. Only
# if every uploaded file matches is the staged folder moved into place and
# `current` switched.
_CHECK_AND_SWITCH = (
    'IFS= read -r go && [ "$go" = go ] || exit 1; root=$1 incoming=$2 release=$3 tmp=$4; '
    "IFS= read -r previous; set --; "
    'while IFS= read -r old && [ -n "$old" ]; do set -- "$@" "$old"; done; '
    'checks=; while IFS= read -r line && [ -n "$line" ]; do checks="$checks$line\n"; done; '
    'set -e; cd "$root/' + RELEASES + '"; '
    'if [ -n "$previous" ]; then (cd "$previous" && xargs -0 -r cp -l --parents -t "../$incoming" --); fi; '
    'cd "$incoming"; printf %s "$checks" | sha256sum --quiet --strict -c -; '
    'cd "$root"; mv -T -- "' + RELEASES + '/$incoming" "' + RELEASES + '/$release"; '
    'ln -s -- "' + RELEASES + '/$release" "$tmp"; mv -T -- "$tmp" ' + CURRENT + "; "
    ': >"' + RELEASES + "/$release/" + BEEN_CURRENT + '"; '
    'cd "$root/' + RELEASES + '"; rm -rf -- "$@"'
)
_SWITCH = (
    'cd "$1" && test -f "' + RELEASES + "/$2/" + META_FILE + '" && ln -s -- "' + RELEASES + '/$2" "$3" && '
    'mv -T -- "$3" ' + CURRENT + ' && : >"' + RELEASES + "/$2/" + BEEN_CURRENT + '"'
)


def _ancestors(paths: list[str]) -> set[str]:
    """Every folder above `paths` (relative, `/`-separated)."""
    found: set[str] = set()
    for path in paths:
        parent = os.path.dirname(path)
        while parent and parent not in found:
            found.add(parent)
            parent = os.path.dirname(parent)
    return found


class SshPublisher:
    """Publishes to `root` on a repository server reached over SSH."""

    def __init__(
        self,
        endpoint: Endpoint,
        private_key: str,
        root: str,
        *,
        mirror: Path,
        keep_releases: int = 5,
        lock_timeout: float = 600.0,
        connect_timeout: float = 30.0,
    ) -> None:
        if keep_releases < 1:
            raise PublishError("keep_releases must be at least 1")
        if not root.startswith("/"):
            raise PublishError(f"the repository server's root must be an absolute path, not {root!r}")
        self.endpoint = endpoint
        self._key = private_key
        self.root = root.rstrip("/") or "/"
        self.mirror = mirror
        self.keep_releases = keep_releases
        self.lock_timeout = lock_timeout
        self.connect_timeout = connect_timeout
        self._held: SshSession | None = None

    @property
    def where(self) -> str:
        return f"{self.endpoint.user}@{self.endpoint.host}:{self.endpoint.port}:{self.root}"

    @property
    def _releases(self) -> str:
        return f"{self.root}/{RELEASES}"

    @contextmanager
    def session(self) -> Iterator[SshSession]:
        """A connection whose SSH failures surface as `PublishError` naming the server.

        Inside `locked()`, the connection that holds the lock.
        """
        if self._held is not None:
            yield self._held
            return
        try:
            with SshSession(self.endpoint, self._key, connect_timeout=self.connect_timeout) as session:
                yield session
        except (MachineError, TransferError) as exc:
            raise PublishError(f"repository server {self.where}: {exc}; current release unchanged") from exc

    @contextmanager
    def _locked(
        self, session: SshSession, holder: str = "", waiting: Callable[[str], None] | None = None
    ) -> Iterator[None]:
        if self._held is not None:
            yield
            return

        def busy(line: str) -> None:
            if waiting is not None and line.startswith("busy"):
                who = line[4:].strip() or "another publisher"
                waiting(f"waiting for the publish lock on {self.where}, held by {who}")

        try:
            lock = session.hold(
                ["sh", "-c", _LOCK, "sh", self.root, str(int(self.lock_timeout)), holder or "an unnamed publisher"],
                ready="locked",
                timeout=self.lock_timeout + 30,
                on_line=busy,
            )
        except MachineError as exc:
            raise PublishError(
                f"could not take the publish lock on {self.where} within {self.lock_timeout:.0f} s: {exc}; "
                "current release unchanged"
            ) from exc
        try:
            yield
        finally:
            lock.close()

    @contextmanager
    def locked(self, holder: str = "", waiting: Callable[[str], None] | None = None) -> Iterator[None]:
        """One connection holding the server's lock for everything inside: reading
        `current`, signing on top of it and publishing are one critical section."""
        if self._held is not None:
            yield
            return
        with self.session() as session, self._locked(session, holder, waiting):
            self._held = session
            try:
                yield
            finally:
                self._held = None

    # -- reading the server ------------------------------------------------

    def _current(self, session: SshSession) -> str | None:
        with ssh_errors(PublishError, f"cannot read {self.where}/{CURRENT}"):
            try:
                return Path(session.sftp.readlink(f"{self.root}/{CURRENT}") or "").name or None
            except FileNotFoundError:
                return None

    def _ids(self, session: SshSession) -> list[str]:
        with ssh_errors(PublishError, f"cannot list {self.where}/{RELEASES}"):
            try:
                names = session.sftp.listdir(self._releases)
            except FileNotFoundError:
                return []
        return sorted(n for n in names if not n.startswith("."))

    def _been_current(self, session: SshSession, ids: list[str]) -> set[str]:
        been = set()
        for release_id in ids:
            with ssh_errors(PublishError, f"cannot read {self.where}/{RELEASES}/{release_id}"):
                try:
                    session.sftp.stat(f"{self._releases}/{release_id}/{BEEN_CURRENT}")
                    been.add(release_id)
                except FileNotFoundError:
                    pass
        return been

    def _listing(self, session: SshSession, release_id: str) -> Listing:
        path = f"{self._releases}/{release_id}/{META_FILE}"
        try:
            text = session.read_text(path)
        except DropshipError as exc:
            raise PublishError(f"release {release_id} on {self.where} has no readable listing: {exc}") from exc
        return Listing.from_json(text, path)

    def current_id(self) -> str | None:
        with self.session() as session:
            return self._current(session)

    def release_ids(self) -> list[str]:
        with self.session() as session:
            return self._ids(session)

    # -- the orchestrator's mirror ----------------------------------------

    @property
    def _objects(self) -> Path:
        return self.mirror / "objects"

    def known_inodes(self) -> dict[tuple[int, int], str]:
        if not self._objects.is_dir():
            return {}
        known = {}
        for entry in os.scandir(self._objects):
            stat = entry.stat(follow_symlinks=False)
            known[(stat.st_dev, stat.st_ino)] = entry.name
        return known

    def fetch_current(self, destination: Path, only: Collection[str] | None = None) -> None:
        """Rebuild the current tree at `destination` from the mirror, downloading only what it lacks;
        with `only`, just those files (the mirror keeps everything else it has)."""
        destination.mkdir(parents=True, exist_ok=True)
        self._objects.mkdir(parents=True, exist_ok=True)
        with self.session() as session:
            current = self._current(session)
            if current is None:
                return
            listing = self._listing(session, current)
            files = listing.files if only is None else {p: e for p, e in listing.files.items() if p in only}
            for path, entry in files.items():
                obj = self._objects / entry.sha256
                if not obj.exists():
                    session.get(
                        f"{self._releases}/{current}/{path}",
                        obj,
                        sha256=entry.sha256,
                        expected=Expected(
                            f"release {current}'s listing", "the server's copy was altered: check the repository server"
                        ),
                    )
        for path, entry in files.items():
            target = destination / path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(self._objects / entry.sha256, target)
        if only is not None:
            return
        for path, link in listing.symlinks.items():
            (destination / path).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(link, destination / path)
        self._keep_objects({e.sha256 for e in listing.files.values()})

    def _remember(self, tree: Path, listing: Listing) -> None:
        """Add the just-published files to the mirror, and forget what is no longer published."""
        self._objects.mkdir(parents=True, exist_ok=True)
        for path, entry in listing.files.items():
            obj = self._objects / entry.sha256
            if not obj.exists():
                try:
                    os.link(tree / path, obj)
                except OSError:
                    shutil.copyfile(tree / path, obj)
        self._keep_objects({e.sha256 for e in listing.files.values()})

    def _keep_objects(self, wanted: set[str]) -> None:
        for entry in os.scandir(self._objects):
            if entry.name not in wanted:
                os.unlink(entry.path)

    # -- publishing -------------------------------------------------------

    def publish(self, tree: Path, release_id: str, progress: Progress | None = None) -> PublishResult:
        """Stage `tree` as `releases/<release_id>` on the server, verify it, then switch `current`."""
        if not tree.is_dir():
            raise PublishError(f"nothing to publish: {tree} is not a folder")
        check_release_id(release_id)
        listing = list_tree(tree, release_id, known_inodes=self.known_inodes())
        incoming_name = f"{INCOMING_PREFIX}{release_id}"
        incoming = f"{self._releases}/{incoming_name}"
        tmp = f".{CURRENT}.tmp-{secrets.token_hex(4)}"
        argv = ["sh", "-c", _CHECK_AND_SWITCH, "sh", self.root, incoming_name, release_id, tmp]
        with self.session() as session, ThreadPoolExecutor(1) as ahead:
            # while the server takes the lock: open the SFTP channel, start the switch command
            switching = ahead.submit(self._start_switch, session, argv)
            try:
                with self._locked(session):
                    switch = switching.result()
                    ids = self._ids(session)
                    if release_id in ids:
                        raise PublishError(f"release {release_id} is already published on {self.where}")
                    current = self._current(session)
                    previous = self._listing(session, current).by_sha256() if current else {}
                    reuse = {p: previous[e.sha256] for p, e in listing.files.items() if e.sha256 in previous}
                    # same path as in the current release: `cp -l` on the server; moved or copied: SFTP
                    same = sorted(p for p, src in reuse.items() if p == src and current and "\n" not in current)
                    moved = sorted(set(reuse) - set(same))
                    new = sorted(p for p in listing.files if p not in reuse)
                    meta = listing.to_json().encode()
                    by_cp = _ancestors(same) - _ancestors([*moved, *new, *listing.symlinks])
                    steps: list[Operation] = [
                        Mkdir(incoming),
                        *[Mkdir(f"{incoming}/{d}") for d in [META_DIR, *sorted(listing.directories() - by_cp)]],
                        *[Hardlink(f"{self._releases}/{current}/{reuse[p]}", f"{incoming}/{p}") for p in moved],
                        *[Upload(tree / p, f"{incoming}/{p}") for p in new],
                        *[Symlink(link, f"{incoming}/{p}") for p, link in sorted(listing.symlinks.items())],
                        Upload(None, f"{incoming}/{META_FILE}", data=meta, counted=False),
                    ]
                    sent = self._stage(session, steps, progress) - len(meta)
                    removed = [  # one a line on the switch's stdin: a name with a newline is not ours to prune
                        r
                        for r in prune_candidates(sorted([*ids, release_id]), release_id, self.keep_releases)
                        if "\n" not in r
                    ]
                    checks = "".join(f"{listing.files[p].sha256}  {p}\n" for p in new)
                    checks += f"{hashlib.sha256(meta).hexdigest()}  {META_FILE}\n"
                    try:
                        switch.finish(
                            f"go\n{current if same else ''}\n".encode()
                            + "".join(f"{r}\n" for r in removed).encode()
                            + b"\n"
                            + checks.encode()
                            + b"\n"
                            + b"".join(p.encode() + b"\0" for p in same)
                        )
                    except MachineError as exc:
                        raise PublishError(
                            f"{self.where}: the uploaded release {release_id} did not check out, "
                            f"current release unchanged: {exc}"
                        ) from exc
            finally:
                if switching.exception() is None:
                    switching.result().close()
        self._remember(tree, listing)
        return PublishResult(
            release_id,
            f"{self.where}/{RELEASES}/{release_id}",
            len(listing.files),
            len(reuse),
            len(new),
            sent,
            tuple(removed),
        )

    def _start_switch(self, session: SshSession, argv: list[str]) -> Started:
        with ssh_errors(MachineError, "cannot open SFTP"):
            _ = session.sftp  # opened now, used under the lock
        return session.start(argv, timeout=self.lock_timeout + 600)

    def _stage(self, session: SshSession, steps: list[Operation], progress: Progress | None) -> int:
        """Create the staged release over SFTP, pipelined; return the bytes sent."""

        def report(done: int, total: int) -> None:
            if progress is not None:
                progress("upload", done, total)

        try:
            return session.apply(steps, report)
        except TransferError as exc:
            raise PublishError(f"staging on {self.where} failed: {exc}; current release unchanged") from exc

    def switch(self, release_id: str) -> None:
        """Point `current` at a release already on the server, under the lock."""
        check_release_id(release_id)
        with self.session() as session, self._locked(session):
            self._switch(session, release_id)

    def rollback(self, to: str | None = None) -> tuple[str | None, str]:
        """Switch to `to` or the release before the current one; return (from, to).

        Chosen and switched in one connection under the server's lock, so a
        publish can't slip in between reading `current` and replacing it.
        """
        with self.session() as session, self._locked(session):
            current = self._current(session)
            ids = self._ids(session)
            target = rollback_target(ids, current, to, self._been_current(session, ids))
            self._switch(session, target)
        return current, target

    def _switch(self, session: SshSession, release_id: str) -> None:
        self._listing(session, release_id)  # refuses a release that was never completed
        tmp = f".{CURRENT}.tmp-{secrets.token_hex(4)}"
        session.run(["sh", "-c", _SWITCH, "sh", self.root, release_id, tmp])
