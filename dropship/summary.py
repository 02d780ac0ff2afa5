"""The release summary: summary.json and the markdown shown in the Prefect UI."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from dropship.run_folder import RunFolder
from dropship.tags import ReleaseClass


class TargetStatus(StrEnum):
    """What became of a target in a release (its value is what summary.json says)."""

    BUILT = "built"
    REUSED = "reused"
    """Its content hash had a stored build: no machine, the stored artifacts."""
    FAILED = "failed"
    SKIPPED = "skipped"
    """A dependency failed or was skipped (dropship.graph)."""
    NOT_BUILT = "not built"
    """The release ended before the target had an outcome."""

    @property
    def unusable(self) -> bool:
        """No artifacts for dependants or the repository: the release can't publish."""
        return self in (TargetStatus.FAILED, TargetStatus.SKIPPED)


@dataclass
class ArtifactSummary:
    name: str
    size: int
    sha256: str


@dataclass
class TargetSummary:
    name: str
    status: TargetStatus
    """A plain string in a build persisted by an older dropship: compare with ==, or TargetStatus(status)."""
    machine: str | None = None
    build_seconds: float | None = None
    machine_seconds: float | None = None
    cost: float | None = None
    """Machine seconds at the machine size's hourly price, in USD (cloud providers only)."""
    reason: str = ""
    artifacts: list[ArtifactSummary] = field(default_factory=list)
    container: str = ""
    """The build image by digest (`registry/name@sha256:...`) for a target with a `container`."""


DETAIL_LIMIT = 300
"""A job's recorded reason: one line, at most this long. What the job printed stays in its log only."""


@dataclass
class JobOutcome:
    """What one [[jobs]] entry did: recorded in the run's jobs.json and the summary. The outcome and a
    short reason (`detail`, one line of at most `DETAIL_LIMIT` characters); never the job's output, which
    is in the job's log (a command may print what a summary must not carry)."""

    name: str
    kind: str
    status: str
    """passed | installed (not executed) | failed | approved | rejected | skipped"""
    seconds: float = 0.0
    machine: str = ""
    detail: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.detail = short_reason(self.detail)


def short_reason(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= DETAIL_LIMIT else line[: DETAIL_LIMIT - 3] + "..."


@dataclass(frozen=True)
class Published:
    """One language package at its registry: recorded in the run's registries.json and the summary."""

    file: str
    registry: str
    status: str
    """uploaded | already published"""
    sha256: str


@dataclass
class ImageSummary:
    """The release's container image: one index in `repository`, one image per platform (dropship/oci.py)."""

    repository: str
    digest: str
    """The index's digest: `repository@digest` is the release's image."""
    tags: list[str]
    platforms: dict[str, str]
    """platform (`linux/arm64`) -> that image's digest."""
    tagged: bool = False
    """False when the release failed after the push: no tag moved."""
    previous: dict[str, str | None] = field(default_factory=dict)
    """Each tag's digest before the release (None: a new tag), for whoever undoes it by hand."""

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"


@dataclass
class ReleaseSummary:
    run_id: str
    project: str
    name: str
    release_class: ReleaseClass
    suites: list[str]
    version: str
    commit: str
    status: str
    """published | dry-run | failed"""
    release_id: str = ""
    error: str = ""
    repository: str = ""
    """Where the release went: the server's releases/<id> (or the signed tree of a dry run)."""
    url: str = ""
    """The URL clients use (the repository's `current`)."""
    machines_created: int = 0
    machine_seconds: float = 0.0
    cost: float = 0.0
    wall_seconds: float = 0.0
    targets: list[TargetSummary] = field(default_factory=list)
    jobs: list[JobOutcome] = field(default_factory=list)
    language_packages: list[Published] = field(default_factory=list)
    """What went to [[registries]] (after the repository was published)."""
    image: ImageSummary | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json() + "\n")
        tmp.replace(path)

    def to_markdown(self) -> str:
        lines = [
            f"# {self.project} {self.name}: {self.status}",
            "",
            f"- class: **{self.release_class}**, suites: {', '.join(self.suites)}",
            f"- version {self.version}, commit `{self.commit[:12]}`",
            f"- machines created: {self.machines_created} ({self.machine_seconds:.0f} machine-seconds, "
            f"${self.cost:.4f}), wall time: {self.wall_seconds:.1f} s",
        ]
        reused = sum(1 for t in self.targets if t.status == TargetStatus.REUSED)
        lines.append(f"- targets: {len(self.targets)}, cache hits: {reused}")
        if self.url:
            lines.append(
                f"- repository: [{self.url}]({self.url.rstrip('/')}/index.html) (published to `{self.repository}`)"
            )
        elif self.repository:
            lines.append(f"- repository: `{self.repository}`")
        if self.image is not None:
            moved = ", ".join(f"`{t}`" for t in self.image.tags) if self.image.tagged else "no tag moved"
            lines.append(f"- image: `{self.image.reference}` ({moved})")
            lines += [f"  - {platform}: `{digest}`" for platform, digest in sorted(self.image.platforms.items())]
        if self.error:
            lines += ["", "```", self.error, "```"]
        lines += [
            "",
            "| target | status | why | machine | build s | machine s | cost $ | artifacts |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for t in self.targets:
            arts = "<br>".join(f"{a.name} (`{a.sha256[:12]}`)" for a in t.artifacts) or "-"
            why = t.reason.replace("\n", " ").replace("|", "/")[:200] or "-"
            lines.append(
                f"| {t.name} | {t.status} | {why} | {t.machine or '-'} | {_num(t.build_seconds)} | "
                f"{_num(t.machine_seconds)} | {'-' if t.cost is None else f'{t.cost:.4f}'} | {arts} |"
            )
        if any(t.container for t in self.targets):
            lines += ["", "Build containers:"]
            lines += [f"- {t.name}: `{t.container}`" for t in self.targets if t.container]
        if self.jobs:
            lines += ["", "| job | kind | status | seconds | machine |", "|---|---|---|---|---|"]
            lines += [f"| {j.name} | {j.kind} | {j.status} | {j.seconds:.1f} | {j.machine or '-'} |" for j in self.jobs]
        if self.language_packages:
            lines += ["", "| language package | registry | status | sha256 |", "|---|---|---|---|"]
            lines += [f"| {p.file} | {p.registry} | {p.status} | `{p.sha256[:12]}` |" for p in self.language_packages]
        return "\n".join(lines) + "\n"


def read_run_records(run: RunFolder | Path) -> tuple[list[JobOutcome], list[Published]]:
    """The jobs (jobs.json) and language packages (registries.json) a run recorded in its folder."""
    folder = RunFolder.at(run)
    known = set(JobOutcome.__dataclass_fields__)  # a run recorded by an older dropship may carry "output"
    jobs = (
        [JobOutcome(**{k: v for k, v in j.items() if k in known}) for j in json.loads(folder.jobs.read_text())]
        if folder.jobs.exists()
        else []
    )
    published = (
        [Published(**p) for p in json.loads(folder.registries.read_text())] if folder.registries.exists() else []
    )
    return jobs, published


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
