"""Jobs around the builds as task runs named after the job (see dropship/jobs.py)."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from dropship import ledger
from dropship.builder import unpack
from dropship.collect import endpoint
from dropship.errors import CommandError, ConfigError, JobFailed
from dropship.integration import (
    create_job_machine,
    plan_install,
    run_integration,
)
from dropship.jobs import Job, integration_targets
from dropship.manifest import Arch, Manifest, PackageFormat
from dropship.plan import ReleasePlan
from dropship.process import run
from dropship.ssh import SshSession
from dropship.summary import JobOutcome
from tasks.machines import client_key_path, provider_for


def _env(plan: ReleasePlan) -> dict[str, str]:
    return {"DROPSHIP_VERSION": plan.version, "SOURCE_DATE_EPOCH": str(plan.source_date_epoch)}


@task(name="unit-job", task_run_name="{job.name}", cache_policy=NO_CACHE)
def unit_job(plan: ReleasePlan, job: Job) -> JobOutcome:
    """On the orchestrator, in the unpacked source, before any machine exists."""
    assert job.command is not None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dropship-unit-") as tmp:
        source = Path(tmp) / "src"
        unpack(Path(plan.archive), source)
        try:
            output = run(job.command, cwd=source, env=_env(plan), what=f"job {job.name}", timeout=job.timeout)
        except CommandError as exc:
            raise JobFailed(
                job.name, f"exited {exc.returncode}: {' / '.join(exc.output.strip().splitlines()[-5:])}"
            ) from exc
    get_run_logger().info("%s passed:\n%s", job.name, "\n".join(output.strip().splitlines()[-20:]))
    return JobOutcome(job.name, "unit", "passed", round(time.monotonic() - started, 3))


@task(name="docs-job", task_run_name="{job.name}", cache_policy=NO_CACHE)
def docs_job(plan: ReleasePlan, job: Job, tree: str) -> JobOutcome:
    """On the orchestrator; what the command writes to `output` goes to docs/<version>/ of the tree."""
    assert job.command is not None and job.output is not None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dropship-docs-") as tmp:
        source = Path(tmp) / "src"
        unpack(Path(plan.archive), source)
        try:
            run(job.command, cwd=source, env=_env(plan), what=f"job {job.name}", timeout=job.timeout)
        except CommandError as exc:
            raise JobFailed(
                job.name, f"exited {exc.returncode}: {' / '.join(exc.output.strip().splitlines()[-5:])}"
            ) from exc
        built = source / job.output
        if not built.is_dir() or not any(built.iterdir()):
            raise JobFailed(job.name, f"wrote nothing to {job.output}/")
        # Into the run folder, which `sign-and-publish` carries into the tree it signs
        # under the lock, and into this tree for the jobs that read it.
        for destination in (plan.folder.docs / plan.version, Path(tree) / "docs" / plan.version):
            shutil.rmtree(destination, ignore_errors=True)
            shutil.copytree(built, destination, symlinks=False)
    get_run_logger().info("%s: docs in docs/%s/ of the tree", job.name, plan.version)
    return JobOutcome(job.name, "docs", "passed", round(time.monotonic() - started, 3), detail=f"docs/{plan.version}/")


@task(name="integration-job", task_run_name="{job.name}", cache_policy=NO_CACHE)
def integration_job(manifest: Manifest, plan: ReleasePlan, job: Job, tree: str, workdir: str) -> JobOutcome:
    """A fresh machine installs the release from the signed tree and runs the job's command; then it is deleted."""
    assert job.arch is not None and job.command is not None
    logger = get_run_logger()
    targets = integration_targets(manifest, job)
    fmt = manifest.target(targets[0]).format or PackageFormat.DEB
    suffix = f".{fmt.value}"
    packages = sorted(p for t in targets for p in plan.folder.artifacts(t).glob(f"*{suffix}"))
    install = plan_install(Path(tree), manifest, plan.suites[0], fmt, Arch(job.arch), packages)
    provider = provider_for(manifest, plan.provider, workdir)
    key = client_key_path(plan)
    started = time.monotonic()
    machine = create_job_machine(
        provider,
        manifest,
        job.name,
        Arch(job.arch),
        run_id=plan.run_id,
        short_run_id=plan.short_id,
        client_public_key=key.with_suffix(".pub").read_text().strip(),
        client_private_key=key.read_text(),
    )
    ledger.record(
        plan.folder,
        "created",
        machine.id,
        machine.name,
        f"job:{job.name}",
        machine.created_at,
        price_hourly=machine.price_hourly,
    )
    logger.info("%s: fresh machine %s is up; installing %s", job.name, machine.name, ", ".join(install.specs))
    try:
        with SshSession(endpoint(machine), key.read_text()) as session:
            outcome, output = run_integration(
                session,
                job=job.name,
                work=machine.work_dir,
                tree=Path(tree),
                install=install,
                suite=plan.suites[0],
                component=manifest.repository.component,
                key_name=manifest.repository.key_name,
                command=job.command,
                timeout=float(job.timeout),
            )
    finally:
        provider.delete(machine.id)
        ledger.record(plan.folder, "deleted", machine.id, machine.name)
    outcome.machine = machine.name
    outcome.seconds = round(time.monotonic() - started, 3)
    if outcome.status == "installed":
        logger.warning("%s: %s", job.name, outcome.detail)
    else:
        logger.info("%s passed on %s: %s\n%s", job.name, machine.name, outcome.detail, output)
    return outcome


def _indexes(manifest: Manifest, plan: ReleasePlan) -> list[tuple[Any, list[Any]]]:
    """(index, its files) for every registry this release publishes to; credentials from blocks, here only."""
    from blocks.registry import RegistryCredentials
    from blocks.values import require_block
    from dropship.jobs import RegistryKind
    from dropship.registries import LanguageRegistry, NpmRegistry, PypiIndex, language_files

    logger = get_run_logger()
    files = language_files(manifest, plan.targets, plan.folder.artifacts())
    chosen = []
    for registry in manifest.registries:
        mine = [f for f in files if f.registry == registry.name]
        if not mine:
            continue
        if plan.release_class not in registry.classes:
            logger.info(
                "%s: not for %s (a %s release; the registry takes %s)",
                ", ".join(f.path.name for f in mine),
                registry.name,
                plan.release_class,
                ", ".join(registry.classes),
            )
            continue
        try:
            credentials = require_block(RegistryCredentials, registry.credentials)
        except ValueError as exc:
            raise ConfigError(
                f"RegistryCredentials block {registry.credentials!r} (registry {registry.name}) not found: "
                "create it before releasing"
            ) from exc
        index: LanguageRegistry
        if registry.kind is RegistryKind.NPM:
            index = NpmRegistry(registry, credentials.username, credentials.secret())
        else:
            index = PypiIndex(
                registry, credentials.username, credentials.secret(), twine=[sys.executable, "-m", "twine"]
            )
        chosen.append((index, mine))
    return chosen


@task(name="check-language-packages", task_run_name="check language packages", cache_policy=NO_CACHE)
def check_language(manifest: Manifest, plan: ReleasePlan) -> None:
    """Before publication: a version the registry serves with other bytes stops the release here."""
    from dropship.registries import conflicts

    for index, files in _indexes(manifest, plan):
        status = conflicts(files, index)
        get_run_logger().info("%s: %s", index.registry.name, "; ".join(f"{n}: {s}" for n, s in status.items()))


@task(name="publish-language-packages", task_run_name="publish language packages", cache_policy=NO_CACHE)
def publish_language(manifest: Manifest, plan: ReleasePlan) -> list[dict[str, str]]:
    """Every target's language packages to their registries, after the repository was published."""
    from dropship.registries import publish

    results: list[dict[str, str]] = []
    for index, files in _indexes(manifest, plan):
        for done in publish(files, index):
            get_run_logger().info("%s -> %s: %s (sha256 %s)", done.file, done.registry, done.status, done.sha256[:12])
            results.append(asdict(done))
    return results
