"""The example release twice, first run and no-change re-run, in one run.

    python -m bench.no_change_release

Starts a local Prefect server (SQLite, 127.0.0.1), releases examples/hello
with local machines, then releases the same tag again. Prints machines
created and wall time of each; goal for the re-run: 0 machines and <= 10 s.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from dropship.prefect_server import LocalPrefectServer


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="dropship-bench-release-"))
    server = LocalPrefectServer(work / "prefect")
    server.start()
    server.export_env()
    try:
        from prefect.logging.handlers import APILogHandler

        from flows.demo import run_demo

        rows = []
        for label in ("first run", "no-change re-run"):
            start = time.perf_counter()
            ok, message = run_demo(work / "demo", "v0.1.0")
            seconds = time.perf_counter() - start
            if not ok:
                raise SystemExit(message)
            import json

            summary = json.loads((work / "demo" / "summary.json").read_text())
            rows.append((label, summary["machines_created"], seconds, summary["wall_seconds"]))
        APILogHandler().flush()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'':18} {'machines':>8} {'wall s':>7} {'flow s':>7}")
    for label, machines, seconds, flow_seconds in rows:
        print(f"{label:18} {machines:>8} {seconds:>7.1f} {flow_seconds:>7.1f}")
    _, machines, seconds, _ = rows[1]
    verdict = "ok" if machines == 0 and seconds <= 10 else "over goal (0 machines, <= 10 s)"
    print(f"re-run / first run: {rows[1][2] / rows[0][2]:.2f}x  {verdict}")


if __name__ == "__main__":
    main()
