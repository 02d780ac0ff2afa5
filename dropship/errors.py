"""One exception hierarchy for everything dropship raises.

Callers catch `DropshipError` to handle every failure dropship knows about;
provider, SSH, gpg and subprocess errors are converted to these at the module
that talks to them (``raise ... from exc``), so the original stays attached
as ``__cause__`` but no third-party exception type leaks upwards.

    DropshipError
    ├── ConfigError            bad input found before anything runs
    │   ├── ManifestError      dropship.toml: names the file and the field
    │   ├── TagError           a ref or tag that can't be classified
    │   └── SigningKeyError    missing, unreadable, expired or expiring key
    ├── CommandError           a subprocess exited non-zero (test, build, tools)
    │   └── TestsFailed        the manifest's test command failed
    ├── MachineError           a build machine could not be created/reached/deleted
    │   ├── HostKeyMismatch    the machine's SSH host key is not the pinned one
    │   └── NotFound           the provider has no such droplet (key, image, action) (any more)
    ├── TransferError          SFTP failed
    │   └── ChecksumMismatch   an artifact's sha256 differs from the build report
    ├── BuildFailed            a target's build did not complete
    ├── StoreError             the artifact store was given a key that is not a content hash (dropship/cache.py)
    ├── RepositoryError        indexing or signing a repository failed
    ├── PublishError           the atomic publication failed (nothing switched)
    ├── WebhookRejected        a forge delivery refused; carries the HTTP status (401/400)
    ├── JobFailed              a [[jobs]] entry failed, was rejected or timed out (dropship/jobs.py)
    ├── RegistryError          a language package could not be published (or conflicts with the registry's)
    ├── ApiUnavailable         the Prefect API kept failing for longer than dropship waits
    ├── ImageError             a container image could not be built, pushed, inspected or tagged (dropship/oci.py)
    └── ReleaseFailed          the release ended without publishing; lists causes
"""

from __future__ import annotations

from collections.abc import Sequence

from dropship.redaction import redact


class DropshipError(Exception):
    """Base of every error dropship raises on purpose.

    Its message never carries a URL's password: a source or index URL with
    credentials is redacted here, once, whatever the raising code wrote.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class ConfigError(DropshipError):
    """Bad input, detected before any machine exists."""


class ManifestError(ConfigError):
    """The manifest is missing, unreadable or invalid."""

    def __init__(self, path: str, field: str, problem: str) -> None:
        self.path = path
        self.field = field
        self.problem = problem
        where = f"{path}: {field}" if field else path
        super().__init__(f"{where}: {problem}")


class TagError(ConfigError):
    """A tag or ref that is neither stable, extra nor a development ref."""


class SigningKeyError(ConfigError):
    """The signing key can't be used (unreadable, secret part missing, expired)."""


class CommandError(DropshipError):
    """A subprocess failed; keeps the command and the tail of its output."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str = "", what: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        label = what or (self.argv[0] if self.argv else "command")
        tail = "\n".join(output.strip().splitlines()[-15:])
        message = f"{label} failed with exit code {returncode}: {' '.join(self.argv)}"
        if tail:
            message += f"\n{tail}"
        super().__init__(message)


class TestsFailed(CommandError):
    """The manifest's test command failed: the release stops before any machine exists."""

    __test__ = False  # not a pytest test class


class MachineError(DropshipError):
    """A build machine could not be created, reached or deleted."""


class HostKeyMismatch(MachineError):
    """The SSH server presented a host key other than the one pinned at creation."""


class NotFound(MachineError):
    """The droplet (or key, image, action) does not exist (any more)."""


class TransferError(DropshipError):
    """Copying files to or from a machine failed."""


class ChecksumMismatch(TransferError):
    """A transferred file's sha256 is not the one the build reported."""


class BuildFailed(DropshipError):
    """A target's build flow run did not complete."""

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"target {target}: {reason}")


class StoreError(DropshipError):
    """The artifact store (dropship/cache.py) was asked for something it can't hold."""


class RepositoryError(DropshipError):
    """Building or signing an APT or RPM repository failed."""


class PublishError(DropshipError):
    """Publication failed before the switch: the published `current` is unchanged."""


class ReleaseFailed(DropshipError):
    """The release ended without publishing; ``causes`` maps target to reason."""

    def __init__(self, message: str, causes: dict[str, str] | None = None) -> None:
        self.causes = dict(causes or {})
        if self.causes:
            message += "".join(f"\n  {name}: {why}" for name, why in sorted(self.causes.items()))
        super().__init__(message)


class WebhookRejected(DropshipError):
    """A webhook delivery the receiver refuses; `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        super().__init__(reason)


class ApiUnavailable(DropshipError):
    """The Prefect API kept answering 429/502/503/504 or dropping connections
    for longer than dropship waits: the orchestrator's server, not a target, failed."""


class JobFailed(DropshipError):
    """A job around the builds failed (or its approval was refused): nothing is published."""

    def __init__(self, job: str, reason: str) -> None:
        self.job = job
        self.reason = reason
        super().__init__(f"job {job}: {reason}")


class RegistryError(DropshipError):
    """A language package was refused by, or conflicts with, its registry."""


class ImageError(DropshipError):
    """A container image could not be built, pushed, inspected or tagged (dropship/oci.py).
    One line; never the registry's password."""
