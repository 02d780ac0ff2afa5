"""dropship installs like a Python tool: a wheel built from this checkout,
installed into a fresh virtualenv, runs the demo (the example travels inside)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_wheel_in_a_fresh_venv_runs_the_demo(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("dropship-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"examples/hello/dropship.toml", "examples/hello/packaging/build.sh", "deployments/prefect.yaml"} <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DROPSHIP_"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    work = tmp_path / "run"  # not the checkout: nothing may come from it
    work.mkdir()
    done = subprocess.run(
        [str(venv / "bin" / "dropship"), "demo", "--workdir", "demo"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((work / "demo" / "summary.json").read_text())
    assert summary["status"] == "published" and summary["version"] == "0.1.0"
    assert (work / "demo" / "published" / "current" / "dists" / "stable" / "InRelease").exists()
