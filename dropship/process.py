"""Running subprocesses: argument lists only, failures become `CommandError`.

Every external tool dropship drives (git, gpg, rpmsign, createrepo_c, the
user's test and build commands) goes through `run`, so a non-zero exit can
never be ignored the way the old shell scripts without `set -e` ignored it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from dropship.errors import CommandError

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for a server dropship starts: SIGTERM when the process that started it dies (Linux).

    Linux ties this to the starting *thread*: a server started from a thread
    that then ends is stopped with it, so start servers from a long-lived thread.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def run(
    argv: Sequence[str],
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    what: str = "",
    timeout: float | None = None,
    input_text: str | None = None,
    error: type[CommandError] = CommandError,
    inherit_env: bool = True,
    user: int | None = None,
    group: int | None = None,
) -> str:
    """Run `argv` and return its combined output; raise `error` on failure.

    `env` is added to the current environment rather than replacing it, so
    PATH and locale survive; pass explicit values to override. With
    `inherit_env=False` the command gets `env` alone (untrusted commands:
    builds). `user`/`group` run it as another uid/gid (no supplementary groups).
    """
    full_env = dict(os.environ) if inherit_env else {}
    if env:
        full_env.update(env)

    try:
        completed = subprocess.run(
            list(argv),
            cwd=cwd,
            env=full_env,
            input=input_text,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
            user=user,
            group=group if group is not None or user is None else user,
            extra_groups=[] if user is not None else None,
        )
    except FileNotFoundError as exc:
        raise error(argv, 127, f"{argv[0]}: not found ({exc})", what) from exc
    except subprocess.TimeoutExpired as exc:
        out = exc.output if isinstance(exc.output, str) else ""
        raise error(argv, -1, f"{out}\ntimed out after {timeout} s", what) from exc
    if completed.returncode != 0:
        raise error(argv, completed.returncode, completed.stdout, what)
    return completed.stdout
