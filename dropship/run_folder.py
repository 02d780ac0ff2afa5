"""Every path of one run: `<workdir>/runs/<run id>/...`, named in one place.

The flow, its tasks, the CLI, the reaper and the summary all read and write
the same run folder. Each file or folder there has one name, here, so a new
run file is added in one line and found by grep on its property.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RUNS = "runs"
SSH_DIR = "ssh"
GNUPG_DIR = "gnupg"
SECRET_DIRS = (SSH_DIR, GNUPG_DIR)
"""Folders of a run that hold secrets: the reaper removes them once the run is over."""


def runs_dir(workdir: str | Path) -> Path:
    """The folder holding every run of a workdir."""
    return Path(workdir) / RUNS


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @classmethod
    def of(cls, workdir: str | Path, run_id: str) -> RunFolder:
        return cls(runs_dir(workdir) / run_id)

    @classmethod
    def at(cls, run: RunFolder | Path) -> RunFolder:
        """`run` itself, or the run folder at that path (tests and tools hold a path, the flow a plan's folder)."""
        return run if isinstance(run, RunFolder) else cls(run)

    @property
    def plan(self) -> Path:
        """plan.json: what the run releases (dropship/plan.py)."""
        return self.root / "plan.json"

    @property
    def summary(self) -> Path:
        """summary.json: how the run ended (dropship/summary.py)."""
        return self.root / "summary.json"

    @property
    def jobs(self) -> Path:
        """jobs.json: each job's outcome, merged as jobs finish (flows/jobs.py)."""
        return self.root / "jobs.json"

    @property
    def registries(self) -> Path:
        """registries.json: what went to which [[registries]] entry."""
        return self.root / "registries.json"

    @property
    def docs(self) -> Path:
        """What docs jobs built, by version; copied into the signed tree."""
        return self.root / "docs"

    @property
    def tree(self) -> Path:
        """The repository tree this run signs (the published one plus its packages)."""
        return self.root / "tree"

    @property
    def promoted_packages(self) -> Path:
        """Scratch copies of the packages a promotion takes from the published tree."""
        return self.root / "packages"

    @property
    def ssh_key(self) -> Path:
        """The run's own SSH client key (swept by the reaper once the run is over)."""
        return self.root / SSH_DIR / "id_ed25519"

    @property
    def gnupg(self) -> Path:
        """The run's signing keyring (GNUPGHOME), where the reaper finds it."""
        return self.root / GNUPG_DIR

    @property
    def ledger(self) -> Path:
        """machines.jsonl: every machine's creation and deletion (dropship/ledger.py)."""
        return self.root / "machines.jsonl"

    def artifacts(self, target: str | None = None) -> Path:
        """Collected artifacts: `artifacts/<target>/`, or the folder of all targets."""
        folder = self.root / "artifacts"
        return folder if target is None else folder / target

    def source_archive(self, target: str) -> Path:
        """A target's source archive with its dependencies' artifacts (depends_on)."""
        return self.root / f"source-{target}.tar.gz"
