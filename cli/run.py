"""How `dropship release` and `dropship demo` talk while the flow runs in this process.

Prefect's console output is turned off (`--verbose` keeps it); everything
Prefect and the flow log, tracebacks included, goes to a log file per run
under the workdir (and to the Prefect UI as always). What the terminal shows
comes from `dropship.progress`: one line per stage and per target, the cause
of a failure once, and the closing lines of a published release.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from dropship.errors import DropshipError, ReleaseFailed
from dropship.progress import Reporter
from dropship.run_folder import RunFolder


@contextmanager
def quiet_prefect(log_file: Path, *, verbose: bool = False, stream: TextIO | None = None) -> Iterator[Reporter]:
    """Prefect's console handlers off (unless verbose), every record into `log_file`, events to `stream`."""
    import prefect  # noqa: F401 - configures Prefect's logging, which this then adjusts
    from prefect.logging.handlers import PrefectConsoleHandler

    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s - %(message)s"))
    reporter = Reporter(stream)
    muted = [] if verbose else [h for h in root.handlers if isinstance(h, PrefectConsoleHandler)]
    levels = [h.level for h in muted]
    for handler in muted:
        handler.setLevel(logging.CRITICAL + 1)
    root.addHandler(file_handler)
    root.addHandler(reporter)
    loud = logging.StreamHandler(sys.stderr) if verbose else None
    if loud is not None:  # everything, tracebacks included, as the log file has it
        loud.setFormatter(file_handler.formatter)
        root.addHandler(loud)
    try:
        yield reporter
    finally:
        root.removeHandler(reporter)
        root.removeHandler(file_handler)
        file_handler.close()
        if loud is not None:
            root.removeHandler(loud)
        for handler, level in zip(muted, levels, strict=True):
            handler.setLevel(level)


def log_path(workdir: Path, what: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return workdir / "logs" / f"{what.replace('/', '-').replace(' ', '-')}-{stamp}.log"


def failure_text(state: Any) -> str:
    """The cause, once: a failed target's reason was already printed on its own line."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as error:  # noqa: BLE001 - the result itself could not be read
        exc = error
    if isinstance(exc, ReleaseFailed):
        return str(exc).splitlines()[0]
    if isinstance(exc, BaseException):
        return str(exc) or type(exc).__name__
    return str(state.message or state.name)


def summary_of(state: Any, workdir: Path) -> tuple[dict[str, Any] | None, Path]:
    """The run's summary.json, copied to `<workdir>/summary.json` (where it is easy to find)."""
    run_file = RunFolder.of(workdir, str(state.state_details.flow_run_id)).summary
    latest = workdir / "summary.json"
    if not run_file.exists():
        return None, latest
    shutil.copyfile(run_file, latest)
    data: dict[str, Any] = json.loads(run_file.read_text())
    return data, latest


def run_release(args: Any) -> int:
    """`dropship release` run here: progress lines, then the closing lines or `--json`."""
    from cli.options import need_api
    from dropship.manifest import load_manifest
    from dropship.progress import closing_lines
    from tasks.settings import default_workdir

    manifest = load_manifest(args.manifest)
    need_api("the build machines' workers take their work from it", reachable=True)
    workdir: Path = args.workdir or default_workdir().absolute()
    what = f"{manifest.project.name} {args.tag or args.ref or 'HEAD'}"
    log_file = log_path(workdir, f"release-{what}")
    out = sys.stderr if args.json else sys.stdout
    print(f"releasing {what} (log: {log_file})", file=out, flush=True)
    with quiet_prefect(log_file, verbose=args.verbose, stream=out):
        from flows.release import release

        state = release(
            manifest=str(args.manifest),
            tag=args.tag,
            ref=args.ref,
            targets=args.targets,
            dry_run=args.dry_run,
            force=args.force,
            provider=args.provider,
            workdir=str(workdir),
            return_state=True,
        )
    summary, summary_file = summary_of(state, workdir)
    if not state.is_completed():
        print(f"✗ release failed: {failure_text(state)}", file=sys.stderr)
        print(f"  full log: {log_file}", file=sys.stderr)
        if args.json and summary is not None:
            print(json.dumps(summary, indent=2))
        return 1
    if summary is None:
        raise DropshipError(f"the release ended but wrote no summary.json under {workdir / 'runs'}")
    if args.json:
        print(json.dumps(summary, indent=2))
    elif summary["status"] == "published":
        print(
            "\n"
            + "\n".join(
                closing_lines(
                    summary,
                    key_name=manifest.repository.key_name,
                    component=manifest.repository.component,
                    summary_path=str(summary_file),
                    provider=args.provider or manifest.machines.provider,
                )
            )
        )
    else:
        print(f"dry run of {what}: signed tree in {summary['repository']}, nothing published; summary: {summary_file}")
    return 0
