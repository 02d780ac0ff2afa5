"""`[[jobs]]`, `[[registries]]` and a target's language `packages` in dropship.toml.

Jobs run around the builds:

- `unit`: before any build, on the orchestrator, like `project.test`;
- `integration`: after the builds and signing, on a fresh machine of its arch,
  which installs the release's packages from the signed, unpublished tree
  with the real apt-get or dnf (signatures checked) and runs `command`;
- `docs`: after the builds, on the orchestrator; the files it writes to
  `output` are published under `docs/<version>/` of the repository tree;
- `manual`: a pause before publication that a person approves or rejects
  (in the Prefect UI or through its API) within `timeout` seconds.

`classes` limits a job to some release classes (empty: every class).

A target may declare language packages (`packages = [{kind = "wheel", glob =
"dist/*.whl", registry = "pypi"}]`; `npm`: tarballs as `npm pack` writes
them): they are collected and checked like the other artifacts and, after
every target and job succeeded, published to the named `[[registries]]`
entry (pypi or npm; cargo is refused, see `UNSUPPORTED`). A target that builds only language packages
leaves out `format` and `artifacts`.

This module imports nothing from `dropship.manifest` at import time (the
manifest imports it); cross-field checks run from the manifest's validator.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from dropship.manifest import Manifest, Target

NAME_RE = r"^[a-z0-9][a-z0-9-]{0,62}$"
ReleaseClassName = Literal["stable", "extra", "development"]
JobCommand = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


class JobKind(str, Enum):
    UNIT = "unit"
    INTEGRATION = "integration"
    DOCS = "docs"
    MANUAL = "manual"


class LanguageKind(str, Enum):
    WHEEL = "wheel"
    SDIST = "sdist"
    NPM = "npm"
    CRATE = "crate"


class RegistryKind(str, Enum):
    PYPI = "pypi"
    NPM = "npm"
    CARGO = "cargo"


REGISTRY_FOR: dict[LanguageKind, RegistryKind] = {
    LanguageKind.WHEEL: RegistryKind.PYPI,
    LanguageKind.SDIST: RegistryKind.PYPI,
    LanguageKind.NPM: RegistryKind.NPM,
    LanguageKind.CRATE: RegistryKind.CARGO,
}


UNSUPPORTED = {
    RegistryKind.CARGO: "cargo registries are not supported yet: `cargo publish` packages from source, "
    "not from a collected .crate",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _inside_source(pattern: str) -> str:
    if not pattern or pattern.startswith("/") or ".." in Path(pattern).parts:
        raise ValueError(f"{pattern!r} must be a glob inside the source tree")
    return pattern


class LanguagePackage(_Model):
    kind: LanguageKind = Field(description="wheel | sdist | npm | crate")
    glob: str = Field(description="glob pattern of the built files, relative to the source root")
    registry: str | None = Field(
        default=None, pattern=NAME_RE, description="the [[registries]] entry it is published to; none: collected only"
    )

    @field_validator("glob")
    @classmethod
    def _relative(cls, value: str) -> str:
        return _inside_source(value)


class Job(_Model):
    name: str = Field(pattern=NAME_RE, description="shown as the job's task run and in the summary")
    kind: JobKind = Field(description="unit | integration | docs | manual")
    arch: Literal["amd64", "arm64"] | None = Field(default=None, description="integration: the fresh machine's arch")
    command: JobCommand | None = Field(default=None, description="argument list (not for manual jobs)")
    needs: list[Annotated[str, Field(pattern=NAME_RE)]] = Field(
        default_factory=list, description="targets whose packages the job uses (integration: installs)"
    )
    classes: list[ReleaseClassName] = Field(default_factory=list, description="release classes it runs for; empty: all")
    timeout: int = Field(default=1800, ge=1, le=7 * 86400, description="seconds the job (or the approval) may take")
    output: str | None = Field(default=None, description="docs: folder the command writes, relative to the source root")

    @field_validator("output")
    @classmethod
    def _output_inside(cls, value: str | None) -> str | None:
        return None if value is None else _inside_source(value)

    def applies_to(self, release_class: str) -> bool:
        return not self.classes or release_class in self.classes


class Registry(_Model):
    name: str = Field(pattern=NAME_RE, description="what a target's packages name in `registry`")
    kind: RegistryKind = Field(description="pypi | npm | cargo")
    url: str = Field(
        pattern=r"^https?://[^\s]+$",
        description="pypi: upload URL (twine's --repository-url); npm: the registry URL (npm's --registry)",
    )
    index: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="pypi only: PEP 503 simple index URL; default <url>/simple/",
    )
    credentials: str = Field(description="RegistryCredentials block name; read on the orchestrator only")
    classes: list[ReleaseClassName] = Field(
        default_factory=lambda: list[ReleaseClassName](["stable", "extra"]),
        min_length=1,
        description="release classes whose language packages go there (default: tags, not development builds)",
    )


def build_globs(target: Target) -> list[str]:
    """What the build collects: the target's artifact globs, then its language packages'."""
    return [*target.artifacts, *(p.glob for p in target.packages)]


def check_jobs(manifest: Manifest) -> None:
    """Cross-field checks of jobs, registries and language packages; raises the manifest's field error."""
    from dropship.manifest import _FieldError

    targets = {t.name: t for t in manifest.targets}
    for index, target in enumerate(manifest.targets):
        if target.format is None and not target.packages:
            raise _FieldError(f"targets[{index}].format", "required (deb or rpm) unless the target declares packages")
        if target.format is not None and target.format.is_package and not target.artifacts:
            raise _FieldError(f"targets[{index}].artifacts", f"a {target.format.value} target needs artifact globs")
    registries: dict[str, Registry] = {}
    for index, registry in enumerate(manifest.registries):
        if registry.name in registries:
            raise _FieldError(f"registries[{index}].name", f"duplicate registry name {registry.name!r}")
        if registry.kind in UNSUPPORTED:
            raise _FieldError(f"registries[{index}].kind", UNSUPPORTED[registry.kind])
        if registry.index is not None and registry.kind is not RegistryKind.PYPI:
            raise _FieldError(f"registries[{index}].index", "a simple index URL is for pypi registries only")
        registries[registry.name] = registry
    for index, target in enumerate(manifest.targets):
        for number, package in enumerate(target.packages):
            where = f"targets[{index}].packages[{number}].registry"
            if REGISTRY_FOR[package.kind] in UNSUPPORTED:  # refused now, not once the builds are done
                raise _FieldError(f"targets[{index}].packages[{number}].kind", UNSUPPORTED[REGISTRY_FOR[package.kind]])
            if package.registry is None:
                continue
            found = registries.get(package.registry)
            if found is None:
                raise _FieldError(where, f"unknown registry {package.registry!r}: add it under [[registries]]")
            if found.kind is not REGISTRY_FOR[package.kind]:
                raise _FieldError(
                    where,
                    f"a {package.kind.value} goes to a {REGISTRY_FOR[package.kind].value} "
                    f"registry, not {found.kind.value} {found.name!r}",
                )
    seen: set[str] = set()
    for index, job in enumerate(manifest.jobs):
        where = f"jobs[{index}]"
        if job.name in seen:
            raise _FieldError(f"{where}.name", f"duplicate job name {job.name!r}")
        seen.add(job.name)
        for need in job.needs:
            if need not in targets:
                raise _FieldError(f"{where}.needs", f"unknown target {need!r}")
        if job.kind is JobKind.MANUAL:
            for field in ("command", "arch", "output"):
                if getattr(job, field) is not None:
                    raise _FieldError(f"{where}.{field}", "a manual job is an approval: it takes no " + field)
            continue
        if job.command is None:
            raise _FieldError(f"{where}.command", f"required for a {job.kind.value} job")
        if job.kind is JobKind.UNIT and job.arch is not None:
            raise _FieldError(f"{where}.arch", "unit jobs run on the orchestrator before any machine: remove arch")
        if job.kind is JobKind.DOCS and job.output is None:
            raise _FieldError(f"{where}.output", "required for a docs job: the folder its command writes")
        if job.kind is JobKind.INTEGRATION:
            if job.arch is None:
                raise _FieldError(f"{where}.arch", "required for an integration job: amd64 or arm64")
            installed = integration_targets(manifest, job)
            if not installed:
                raise _FieldError(f"{where}.needs", f"no deb or rpm target of arch {job.arch} to install")
            for name in installed:
                target = targets[name]
                if target.arch.value != job.arch or target.format is None or not target.format.is_package:
                    raise _FieldError(f"{where}.needs", f"target {name!r} is not a deb/rpm target of arch {job.arch}")
            if len({targets[n].format for n in installed}) > 1:
                raise _FieldError(f"{where}.needs", "name the targets of one format (deb or rpm): one job per format")


def integration_targets(manifest: Manifest, job: Job) -> list[str]:
    """The targets whose packages an integration job installs: `needs`, or every deb/rpm target of its arch."""
    if job.needs:
        return list(job.needs)
    return [
        t.name for t in manifest.targets if t.arch.value == job.arch and t.format is not None and t.format.is_package
    ]


def jobs_of(manifest: Manifest, kind: JobKind, release_class: str) -> list[Job]:
    return [j for j in manifest.jobs if j.kind is kind and j.applies_to(release_class)]
