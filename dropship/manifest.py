"""`dropship.toml` -> a typed, validated model.

Everything a release needs to know about a project is read and checked here,
before any machine exists, so a typo costs a second and not a droplet. Every
error names the file, the field (dotted, with list indices) and what was
expected.

Every value is bounded (lengths, counts, ranges: see docs/manifest.md) and
checked for what would only fail later on a machine: NUL bytes and control
characters, environment names, a shell string given as a one-element
command, artifact globs that name no file, patterns that could backtrack
catastrophically. Integers are strict: `true` is not 1.
"""

from __future__ import annotations

import re
import tomllib
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from dropship.errors import ConfigError, ManifestError
from dropship.jobs import Job, LanguagePackage, Registry, check_jobs
from dropship.patterns import UnsafePattern, compile_pattern, probe_pattern

NAME_RE = r"^[a-z0-9][a-z0-9-]{0,62}$"
SUITE_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SLUG_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
"""Provider names of sizes, images and regions (`s-2vcpu-4gb`, `debian-12-x64`, `nyc1`)."""
BLOCK_RE = r"^[a-z0-9][a-z0-9-]{0,99}$"
"""Prefect block document names: lowercase letters, digits and dashes."""
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}", re.ASCII)
RESERVED_ENV = ("DROPSHIP_", "PREFECT_", "SOURCE_DATE_EPOCH")
"""Set by dropship for the build (or the worker's own): a manifest may not set them."""
SHELL_CHARS = set(" \t\n;&|<>$`()*?\\'\"")
"""Characters that mean a shell string was given as the program: spaces, operators, quotes, globs."""
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_ARG = 4096
MAX_ARGS = 256
MAX_ENV = 100
MAX_ENV_VALUE = 32 * 1024
MAX_TARGETS = 64
MAX_GLOBS = 64
MAX_PATTERNS = 100
MAX_BUILD_TIMEOUT = 24 * 3600
MAX_VALID_DAYS = 3650
MAX_KEEP_VERSIONS = 1000


def _text(value: str) -> str:
    """No NUL byte or other control character: they fail later, far from the manifest."""
    for char in value:
        if char == "\x00":
            raise ValueError("contains a NUL byte: remove it")
        if ord(char) < 32 or ord(char) == 127:
            raise ValueError(f"contains the control character {char!r}: remove it")
    return value


def _one_line(value: str) -> str:
    _text(value)
    if value != value.strip():
        raise ValueError(f"{value[:60]!r} has leading or trailing spaces: remove them")
    return value


def _command(value: list[str]) -> list[str]:
    program = value[0]
    if SHELL_CHARS & set(program):
        hint = ' e.g. ["sh", "-c", ' + repr(program[:40]).replace("'", '"') + "]" if len(value) == 1 else ""
        raise ValueError(
            f"the program {program[:60]!r} contains spaces or shell characters: a command is an argument list "
            f"run without a shell; split it, or run a shell explicitly,{hint}"
        )
    return value


def _each_once(what: str) -> AfterValidator:
    """A list that names each `what` once."""

    def check(value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"names a {what} twice: list each once")
        return value

    return AfterValidator(check)


Text = Annotated[StrictStr, AfterValidator(_one_line)]
Arg = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ARG), AfterValidator(_text)]
Command = Annotated[list[Arg], Field(min_length=1, max_length=MAX_ARGS), AfterValidator(_command)]
Name = Annotated[StrictStr, Field(pattern=NAME_RE)]
Slug = Annotated[StrictStr, Field(pattern=SLUG_RE)]
BlockName = Annotated[StrictStr, Field(pattern=BLOCK_RE)]


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
    OCI = "oci"
    """A per-architecture container image from a Dockerfile (dropship/oci_build.py, [oci] table)."""

    @property
    def is_package(self) -> bool:
        """deb or rpm: goes into the signed repositories."""
        return self in (PackageFormat.DEB, PackageFormat.RPM)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Project(_Model):
    name: Name = Field(description="project name, used in tags and paths")
    source: Text = Field(
        default=".",
        min_length=1,
        max_length=MAX_ARG,
        description="git repository: a path relative to the manifest, or a URL",
    )
    test: Command | None = Field(default=None, description="argument list run on the orchestrator before any machine")


DebianPackage = Annotated[StrictStr, Field(pattern=r"^[a-z0-9][a-z0-9+.:=~-]*$", max_length=200)]


class MachineDefaults(_Model):
    size: Slug = "s-2vcpu-4gb"
    image: Slug = "debian-12-x64"
    region: Slug = "nyc1"
    setup: list[DebianPackage] = Field(
        default_factory=list, max_length=MAX_ARGS, description="Debian packages every build machine needs"
    )
    setup_commands: list[Command] = Field(
        default_factory=list, max_length=MAX_ARGS, description="argument lists run as root after them"
    )


class Target(_Model):
    name: Name
    arch: Arch
    format: PackageFormat | None = Field(
        default=None, description="deb | rpm; left out by a target of language packages only"
    )
    build: Command = Field(description="argument list run in the unpacked source on the machine")
    artifacts: list[Annotated[Text, Field(max_length=MAX_ARG)]] = Field(
        default_factory=list, max_length=MAX_GLOBS, description="glob patterns, relative to the source root"
    )
    env: dict[StrictStr, Annotated[StrictStr, Field(max_length=MAX_ENV_VALUE)]] = Field(
        default_factory=dict, max_length=MAX_ENV
    )
    size: Slug | None = None
    image: Slug | None = None
    region: Slug | None = None
    setup: list[DebianPackage] = Field(
        default_factory=list, max_length=MAX_ARGS, description="Debian packages added to the defaults'"
    )
    setup_commands: list[Command] = Field(
        default_factory=list, max_length=MAX_ARGS, description="root commands run after the defaults'"
    )
    rebuild_patterns: list[StrictStr] = Field(default_factory=lambda: [".*"], max_length=MAX_PATTERNS)
    depends_on: Annotated[list[Name], _each_once("target")] = Field(default_factory=list, max_length=MAX_TARGETS)
    packages: list[LanguagePackage] = Field(default_factory=list, description="language packages (dropship/jobs.py)")
    dockerfile: Annotated[Text, Field(min_length=1, max_length=MAX_ARG)] | None = Field(
        default=None,
        description='format = "oci" only: the Dockerfile, relative to the source root (default Dockerfile)',
    )

    container: StrictStr | None = Field(
        default=None,
        max_length=512,
        description="an image to run the build in: registry-host[:port]/name[:tag][@sha256:...] (dropship/containers.py)",
    )
    container_credentials: BlockName = Field(
        default="dropship-registry",
        description="the prefect-docker DockerRegistryCredentials block for the container's registry",
    )

    @field_validator("container")
    @classmethod
    def _container_reference(cls, value: str | None) -> str | None:
        if value is not None:
            from dropship.containers import parse_image
            from dropship.errors import ImageError

            try:
                parse_image(value)
            except ImageError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("dockerfile")
    @classmethod
    def _relative_dockerfile(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in Path(value).parts or value.endswith("/")):
            raise ValueError(f"{value!r} must name a file inside the source tree, e.g. 'Dockerfile'")
        return value

    @field_validator("rebuild_patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                compile_pattern(pattern)
            except UnsafePattern as exc:
                raise ValueError(f"{pattern[:60]!r} {exc}") from exc
        return value

    @field_validator("artifacts")
    @classmethod
    def _relative_globs(cls, value: list[str]) -> list[str]:
        for pattern in value:
            parts = Path(pattern).parts
            if pattern.startswith("/") or ".." in parts:
                raise ValueError(f"{pattern!r} must stay inside the source tree")
            if not parts or pattern.endswith("/") or set(parts) <= {"."}:
                raise ValueError(f"{pattern!r} names no file: give a glob of the built packages, e.g. 'out/*.deb'")
        return value

    @field_validator("env")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not ENV_NAME_RE.fullmatch(name):
                raise ValueError(
                    f"{name[:60]!r} is not an environment variable name: ASCII letters, digits and '_', "
                    "not starting with a digit"
                )
            if name.startswith(RESERVED_ENV):
                raise ValueError(f"{name} is set by dropship, not by the manifest: rename it")
            if "\x00" in text:
                raise ValueError(f"the value of {name} contains a NUL byte: remove it")
        return value


class ClassSettings(_Model):
    suites: Annotated[list[Annotated[StrictStr, Field(pattern=SUITE_RE)]], _each_once("suite")] = Field(
        min_length=1, max_length=16
    )
    pattern: StrictStr | None = Field(default=None, description="extra only: which other tags are releasable")


class ReleaseClasses(_Model):
    stable: ClassSettings = ClassSettings(suites=["stable"])
    extra: ClassSettings = ClassSettings(suites=["testing"], pattern=r"^v\d+\.\d+\.\d+[-+][0-9A-Za-z.+-]+$")
    development: ClassSettings = ClassSettings(suites=["nightly"])

    @field_validator("extra")
    @classmethod
    def _extra_pattern(cls, value: ClassSettings) -> ClassSettings:
        if value.pattern is None:
            raise ValueError("extra needs a pattern: which non-stable tags are releases")
        try:
            compile_pattern(value.pattern)
            probe_pattern(value.pattern)
        except UnsafePattern as exc:
            raise _FieldError("classes.extra.pattern", f"{value.pattern[:60]!r} {exc}") from exc
        return value

    @model_validator(mode="after")
    def _suites_apart(self) -> ReleaseClasses:
        seen: dict[str, str] = {}
        for name in ("stable", "extra", "development"):
            for suite in getattr(self, name).suites:
                if suite in seen:
                    raise _FieldError(
                        f"classes.{name}.suites",
                        f"suite {suite!r} is already the {seen[suite]} class's: each class needs its own suites",
                    )
                seen[suite] = name
        return self


class Repository(_Model):
    origin: Text = Field(default="dropship", min_length=1, max_length=128, description="Origin in Release")
    label: Text | None = Field(default=None, min_length=1, max_length=128, description="Label in Release")
    component: StrictStr = Field(default="main", pattern=SUITE_RE)
    keep_versions: StrictInt = Field(
        default=3, ge=1, le=MAX_KEEP_VERSIONS, description="versions of each package kept per suite"
    )
    valid_days: StrictInt | None = Field(
        default=None, ge=1, le=MAX_VALID_DAYS, description="Valid-Until in Release, in days"
    )
    key_name: Name = Field(default="release", description="keys/<key_name>.asc")


class Blocks(_Model):
    signing_key: BlockName = Field(default="dropship-signing-key", description="SigningKey block name")
    repo_server: BlockName = Field(default="dropship-repo", description="RepoServer block name")


class Machines(_Model):
    provider: StrictStr = Field(default="local", pattern=r"^(local|digitalocean)$")
    credentials: BlockName = Field(default="dropship-digitalocean", description="DigitalOceanCredentials block name")
    build_timeout: StrictInt = Field(
        default=1800, ge=10, le=MAX_BUILD_TIMEOUT, description="seconds one build may take"
    )


class OciSettings(_Model):
    """Where the image targets' images go: one repository, one index per release ([oci])."""

    repository: StrictStr = Field(
        max_length=255, description="registry-host[:port]/name, e.g. registry.example.org/hello (no tag)"
    )
    credentials: BlockName = Field(
        default="dropship-registry", description="prefect-docker DockerRegistryCredentials block name"
    )

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        from dropship.oci import REPOSITORY_RE

        if not REPOSITORY_RE.fullmatch(value):
            raise ValueError(
                f"{value[:60]!r} is not an image repository: registry-host[:port]/name in lowercase, no tag"
            )
        return value


DOCKER_PACKAGE = "docker.io"
"""What an image target's or a build container's machine needs: dropship starts its own dockerd from it."""


class Manifest(_Model):
    project: Project
    defaults: MachineDefaults = MachineDefaults()
    targets: list[Target] = Field(min_length=1, max_length=MAX_TARGETS)
    repository: Repository = Repository()
    classes: ReleaseClasses = ReleaseClasses()
    blocks: Blocks = Blocks()
    machines: Machines = Machines()
    jobs: list[Job] = Field(default_factory=list, description="jobs around the builds (dropship/jobs.py)")
    registries: list[Registry] = Field(default_factory=list, description="where language packages go")
    oci: OciSettings | None = Field(default=None, description='where images of format = "oci" targets go')

    @model_validator(mode="after")
    def _images_consistent(self) -> Manifest:
        images = [(i, t) for i, t in enumerate(self.targets) if t.format is PackageFormat.OCI]
        for index, target in enumerate(self.targets):
            if target.dockerfile is not None and target.format is not PackageFormat.OCI:
                raise _FieldError(f"targets[{index}].dockerfile", 'only a target with format = "oci" builds an image')
        if images and self.oci is None:
            raise _FieldError(
                f"targets[{images[0][0]}].format",
                'an "oci" target needs an [oci] table: repository = "registry-host/name", credentials = "<block>"',
            )
        if self.oci is not None and not images:
            raise _FieldError("oci", 'no target has format = "oci": remove [oci] or add an image target')
        arches: dict[str, str] = {}
        for index, target in images:
            if target.arch.value in arches:
                raise _FieldError(
                    f"targets[{index}].arch",
                    f"{arches[target.arch.value]!r} already builds the {target.arch.value} image: one image target per arch",
                )
            arches[target.arch.value] = target.name
            if target.artifacts or target.packages:
                raise _FieldError(
                    f"targets[{index}].artifacts",
                    "an oci target's artifact is its image: remove artifacts and packages",
                )
            if DOCKER_PACKAGE not in self.machine_setup(target)[0]:
                raise _FieldError(
                    f"targets[{index}].setup",
                    f'an "oci" target builds its image with Docker on its machine: add "{DOCKER_PACKAGE}" to its setup',
                )
        for index, target in enumerate(self.targets):
            if target.container is not None and DOCKER_PACKAGE not in self.machine_setup(target)[0]:
                raise _FieldError(
                    f"targets[{index}].setup",
                    f'a target with a container builds in it with Docker on its machine: add "{DOCKER_PACKAGE}" '
                    "to its setup",
                )
            if target.container is None and "container_credentials" in target.model_fields_set:
                raise _FieldError(
                    f"targets[{index}].container_credentials", "names a block but the target has no container"
                )
        return self

    @model_validator(mode="after")
    def _jobs_consistent(self) -> Manifest:
        check_jobs(self)
        return self

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
        raise ConfigError(
            f"the manifest has no target {name!r}; its targets: {', '.join(t.name for t in self.targets)}"
        )

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
            cycle = path[path.index(name) :] + [name]
            index = [t.name for t in targets].index(name)
            raise _FieldError(f"targets[{index}].depends_on", "dependency cycle " + " -> ".join(cycle))
        state[name] = 1
        for dep in deps[name]:
            visit(dep, path + [name])
        state[name] = 2

    for target in targets:
        visit(target.name, [])


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(part):
            text += f"[{_short(part)}]"
        else:
            text += f".{part}" if text else part
    return text


def _short(value: Any) -> str:
    """A bounded one-line rendering of a manifest value for messages."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


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
            message = f"expected one of {first['ctx']['expected']}, got {_short(first['input'])}"
        elif first["type"] == "string_pattern_mismatch":
            message = f"{_short(first['input'])} does not match {first['ctx']['pattern']}"
        elif first["type"] == "int_type":
            message = f"expected an integer, got {_short(first['input'])} (true/false and strings are not numbers)"
        elif first["type"] == "string_type":
            message = f"expected a string, got {_short(first['input'])}"
        elif first["type"] in ("less_than_equal", "greater_than_equal", "less_than", "greater_than"):
            message = f"{message}, got {_short(first['input'])}"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        more = len(exc.errors()) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ManifestError(path, field, message) from exc


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate `path`."""
    file = Path(path)
    try:
        with file.open("rb") as stream:
            raw = stream.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(str(file), "", f"cannot be read: {exc.strerror}") from exc
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(str(file), "", f"is larger than {MAX_MANIFEST_BYTES // 1024} KiB: is it the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            str(file), "", f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): save it as UTF-8"
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(str(file), "", f"is not valid TOML: {str(exc).splitlines()[0]}") from exc
    except RecursionError as exc:
        raise ManifestError(str(file), "", "is not valid TOML: arrays or tables nested too deeply") from exc
    return parse_manifest(data, str(file))
