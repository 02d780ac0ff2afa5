"""`dropship.toml` -> a typed, validated model.

Everything a release needs to know about a project is read and checked here,
before any machine exists, so a typo costs a second and not a droplet. Every
error names the file, the field (dotted, with list indices) and what was
expected.
"""

from __future__ import annotations

import re
import tomllib
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dropship.errors import ManifestError

NAME_RE = r"^[a-z0-9][a-z0-9-]{0,62}$"
SUITE_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

Command = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


class Arch(str, Enum):
    """Debian architecture names; RPM names are derived."""

    AMD64 = "amd64"
    ARM64 = "arm64"

    @property
    def rpm(self) -> str:
        return {"amd64": "x86_64", "arm64": "aarch64"}[self.value]


class PackageFormat(str, Enum):
    DEB = "deb"
    RPM = "rpm"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Project(_Model):
    name: str = Field(pattern=NAME_RE, description="project name, used in tags and paths")
    source: str = Field(default=".", description="git repository: a path relative to the manifest, or a URL")
    test: Command | None = Field(default=None, description="argument list run on the orchestrator before any machine")


DebianPackage = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.:=~-]*$")]


class MachineDefaults(_Model):
    size: str = "s-2vcpu-4gb"
    image: str = "debian-12-x64"
    region: str = "nyc1"
    setup: list[DebianPackage] = Field(default_factory=list, description="Debian packages every build machine needs")
    setup_commands: list[Command] = Field(default_factory=list, description="argument lists run as root after them")


class Target(_Model):
    name: str = Field(pattern=NAME_RE)
    arch: Arch
    format: PackageFormat
    build: Command = Field(description="argument list run in the unpacked source on the machine")
    artifacts: list[str] = Field(min_length=1, description="glob patterns, relative to the source root")
    env: dict[str, str] = Field(default_factory=dict)
    size: str | None = None
    image: str | None = None
    region: str | None = None
    setup: list[DebianPackage] = Field(default_factory=list, description="Debian packages added to the defaults'")
    setup_commands: list[Command] = Field(default_factory=list, description="root commands run after the defaults'")
    rebuild_patterns: list[str] = Field(default_factory=lambda: [".*"])
    depends_on: list[str] = Field(default_factory=list)

    @field_validator("rebuild_patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from exc
        return value

    @field_validator("artifacts")
    @classmethod
    def _relative_globs(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if pattern.startswith("/") or ".." in Path(pattern).parts:
                raise ValueError(f"{pattern!r} must stay inside the source tree")
        return value


class ClassSettings(_Model):
    suites: list[Annotated[str, Field(pattern=SUITE_RE)]] = Field(min_length=1)
    pattern: str | None = Field(default=None, description="extra only: which other tags are releasable")


class ReleaseClasses(_Model):
    stable: ClassSettings = ClassSettings(suites=["stable"])
    extra: ClassSettings = ClassSettings(
        suites=["testing"], pattern=r"^v\d+\.\d+\.\d+[-+][0-9A-Za-z][0-9A-Za-z.]*$"
    )
    development: ClassSettings = ClassSettings(suites=["nightly"])

    @field_validator("extra")
    @classmethod
    def _extra_pattern(cls, value: ClassSettings) -> ClassSettings:
        if value.pattern is None:
            raise ValueError("extra needs a pattern: which non-stable tags are releases")
        try:
            re.compile(value.pattern)
        except re.error as exc:
            raise ValueError(f"pattern {value.pattern!r} is not a regular expression: {exc}") from exc
        return value


class Repository(_Model):
    origin: str = "dropship"
    label: str | None = None
    component: str = Field(default="main", pattern=SUITE_RE)
    keep_versions: int = Field(default=3, ge=1, description="versions of each package kept per suite")
    valid_days: int | None = Field(default=None, ge=1, description="Valid-Until in Release, in days")
    key_name: str = Field(default="release", pattern=NAME_RE, description="keys/<key_name>.asc")


class Blocks(_Model):
    signing_key: str = Field(default="dropship-signing-key", description="SigningKey block name")
    repo_server: str = Field(default="dropship-repo", description="RepoServer block name")


class Machines(_Model):
    provider: str = Field(default="local", pattern=r"^(local|digitalocean)$")
    credentials: str = Field(default="dropship-digitalocean", description="DigitalOceanCredentials block name")
    build_timeout: int = Field(default=1800, ge=10, description="seconds one build may take")


class Manifest(_Model):
    project: Project
    defaults: MachineDefaults = MachineDefaults()
    targets: list[Target] = Field(min_length=1)
    repository: Repository = Repository()
    classes: ReleaseClasses = ReleaseClasses()
    blocks: Blocks = Blocks()
    machines: Machines = Machines()

    @model_validator(mode="after")
    def _targets_consistent(self) -> Manifest:
        names = [t.name for t in self.targets]
        seen: set[str] = set()
        for index, name in enumerate(names):
            if name in seen:
                raise _FieldError(f"targets[{index}].name", f"duplicate target name {name!r}")
            seen.add(name)
        for index, target in enumerate(self.targets):
            for dep in target.depends_on:
                if dep not in seen:
                    raise _FieldError(f"targets[{index}].depends_on", f"unknown target {dep!r}")
        _check_acyclic(self.targets)
        return self

    def target(self, name: str) -> Target:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    def machine_spec(self, target: Target) -> dict[str, str]:
        """Size, image and region of a target's machine, defaults filled in."""
        return {
            "size": target.size or self.defaults.size,
            "image": target.image or self.defaults.image,
            "region": target.region or self.defaults.region,
        }

    def machine_setup(self, target: Target) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
        """Debian packages and root commands the target's machine needs: the defaults', then its own."""
        packages = tuple(dict.fromkeys([*self.defaults.setup, *target.setup]))
        commands = tuple(tuple(c) for c in [*self.defaults.setup_commands, *target.setup_commands])
        return packages, commands


class _FieldError(ValueError):
    """A cross-field problem whose location is more precise than the model's."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(problem)


def _check_acyclic(targets: list[Target]) -> None:
    deps = {t.name: list(t.depends_on) for t in targets}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            index = [t.name for t in targets].index(name)
            raise _FieldError(f"targets[{index}].depends_on", "dependency cycle " + " -> ".join(cycle))
        state[name] = 1
        for dep in deps[name]:
            visit(dep, path + [name])
        state[name] = 2

    for target in targets:
        visit(target.name, [])


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse_manifest(data: dict[str, Any], path: str = "dropship.toml") -> Manifest:
    """Validate already-parsed TOML; raise `ManifestError` naming the first bad field."""
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        ctx_error = (first.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _FieldError):
            raise ManifestError(path, ctx_error.field, ctx_error.problem) from exc
        field = _location(tuple(first["loc"]))
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field (check the spelling)"
        elif first["type"] == "missing":
            message = "required field is missing"
        elif first["type"] == "enum" and "expected" in (first.get("ctx") or {}):
            message = f"expected one of {first['ctx']['expected']}, got {first['input']!r}"
        elif first["type"] == "string_pattern_mismatch":
            message = f"{first['input']!r} does not match {first['ctx']['pattern']}"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        more = len(exc.errors()) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ManifestError(path, field, message) from exc


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate `path`."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(str(file), "", f"cannot be read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(str(file), "", f"is not valid TOML: {exc}") from exc
    return parse_manifest(data, str(file))
