"""The `dropship` command.

Only argument parsing lives here; each command imports the Prefect layer
(`flows/`) when it runs, so the core stays importable without Prefect and a
local server can be started before Prefect reads its settings.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli import options
from dropship import __version__
from dropship.errors import DropshipError
from dropship.redaction import redact_logs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dropship",
        description="Release automation on Prefect: build per target on ephemeral machines, "
        "sign APT and RPM repositories, publish atomically.",
    )
    parser.add_argument("--version", action="version", version=f"dropship {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        parents=[
            options.demo_dir(),
            options.provider("local", "build machines: local sshd+worker (default), or droplets of --do-endpoint"),
            options.verbose(),
        ],
        help="release the example project on this machine, end to end",
        description="Release examples/hello with local machines (sshd + Prefect worker each), a throw-away "
        "signing key and a local Prefect server (started unless PREFECT_API_URL is set). Leaves "
        "DIR/published/current (the repository) and DIR/summary.json.",
    )
    demo.add_argument("--tag", default="v0.1.0", help="tag to release (default: v0.1.0)")
    demo.add_argument("--do-endpoint", help="DigitalOcean API URL, e.g. the emulator's; token from $DIGITALOCEAN_TOKEN")
    demo.add_argument(
        "--worker-api-url",
        help="Prefect API URL as the droplets reach it (with the emulator: the name it publishes, e.g. "
        "http://orchestrator.dropship.test:4200/api)",
    )
    demo.add_argument(
        "--image",
        action="store_true",
        help="also release the example's two-platform image (examples/hello/oci.toml) to a registry on 127.0.0.1:5000 "
        "(root; Debian's docker.io, docker-registry, apache2-utils, skopeo)",
    )

    init = commands.add_parser(
        "init",
        help="write a commented dropship.toml for the project in this folder",
        description="Write DIR/dropship.toml: the project named after its git origin (or folder), one target per "
        "--arch and --format, block names, and comments saying what to change. Replace each target's build "
        "command, then run `dropship check`.",
    )
    init.add_argument("--dir", type=Path, default=Path("."), help="the project's folder (default: here)")
    init.add_argument("--name", help="project name (default: from the git origin, else the folder)")
    init.add_argument(
        "--arch",
        action="append",
        choices=["amd64", "arm64"],
        dest="arches",
        help="a target architecture (repeatable; default: amd64 and arm64)",
    )
    init.add_argument(
        "--format",
        action="append",
        choices=["deb", "rpm"],
        dest="formats",
        help="a package format (repeatable; default: deb and rpm)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing dropship.toml")

    rel = commands.add_parser(
        "release",
        parents=[options.manifest(), options.state_dir(), options.provider(), options.verbose()],
        help="run the release flow for a project (needs PREFECT_API_URL)",
        description="Run the release flow in this process against the Prefect server at PREFECT_API_URL.",
    )
    rel.add_argument("tag", nargs="?", help="tag to release (vX.Y.Z is stable; the manifest's pattern is extra)")
    rel.add_argument("--ref", help="branch or commit for a development release instead of a tag")
    rel.add_argument("--target", action="append", dest="targets", help="build only this target (repeatable)")
    rel.add_argument("--dry-run", action="store_true", help="build, collect and sign, but publish nothing")
    rel.add_argument(
        "--force", action="store_true", help="rebuild targets even when their content hash has a stored build"
    )
    rel.add_argument(
        "--submit",
        action="store_true",
        help="don't run here: create a run of the release-tag deployment for a worker, print its id",
    )
    rel.add_argument(
        "--json", action="store_true", help="print the summary (summary.json) instead of the closing lines"
    )

    from cli.setup import add_commands

    add_commands(commands)

    status = commands.add_parser(
        "status",
        help="recent releases, promotions and rollbacks and their state (needs PREFECT_API_URL)",
        description="List the latest runs of the release, promote and rollback flows, newest first.",
    )
    status.add_argument("--limit", type=int, default=15, help="how many runs (default 15)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")

    hook = commands.add_parser(
        "webhook",
        parents=[options.manifest()],
        help="serve the forge webhook receiver on 127.0.0.1 (needs PREFECT_API_URL)",
        description="Accept GitLab tag-push and GitHub push/create tag events at POST /hooks/release; start one run "
        "of the release-tag deployment per project, tag and commit. Secrets come from a WebhookSecrets block.",
    )
    hook.add_argument("--port", type=int, default=8787, help="port on 127.0.0.1 (default 8787)")
    hook.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    hook.add_argument("--secrets-block", default="dropship-webhook", help="WebhookSecrets block name")
    hook.add_argument(
        "--deployment", default="release/release-tag", help="deployment to run (default release/release-tag)"
    )

    deps_commands = options.actions(
        commands,
        "deployments",
        "deployments_command",
        help="create the deployments, work pools, limits and automation (needs PREFECT_API_URL)",
        description="Manage dropship's Prefect deployments (the same set as deployments/prefect.yaml).",
    )
    apply = deps_commands.add_parser(
        "apply",
        parents=[options.manifest(), options.state_dir(), options.provider("local", "machines the reaper checks")],
        help="create or update everything; a second apply changes nothing",
        description="Create the orchestrator and builders work pools, the global concurrency limits "
        "dropship-publish (1) and dropship-machines, the deployments release-tag, release-weekly, promote, "
        "rollback, reap and build, and the automation that marks zombie flow runs Crashed.",
    )
    apply.add_argument(
        "--weekly-cron", default="0 3 * * 1", help="cron of the weekly development build (default: Monday 03:00)"
    )
    apply.add_argument("--timezone", default="UTC", help="IANA timezone of --weekly-cron (default UTC)")
    apply.add_argument("--weekly-ref", default="main", help="branch the weekly build releases (default main)")
    apply.add_argument("--reap-minutes", type=float, default=10.0, help="how often the reaper runs (default 10)")
    apply.add_argument("--machines", type=int, default=8, help="slots of the dropship-machines limit (default 8)")

    keys_commands = options.actions(
        commands,
        "keys",
        "keys_command",
        help="generate or export a repository signing key",
        description="Make the GnuPG key that signs the repositories, or print its public part.",
    )
    gen = keys_commands.add_parser(
        "generate",
        help="generate an ed25519 signing key (no passphrase)",
        description="Write a new armored secret key to --out (mode 0600) and/or save it "
        "as a SigningKey block (--block, needs PREFECT_API_URL).",
    )
    gen.add_argument("--name", required=True, help='user id name, e.g. "Example Project release key"')
    gen.add_argument("--email", required=True, help="user id email")
    gen.add_argument("--expire-days", type=int, default=730, help="validity in days (default 730)")
    gen.add_argument("--out", type=Path, help="file to write the secret key to")
    gen.add_argument("--block", help="SigningKey block name to save the key as")
    exp = keys_commands.add_parser(
        "export",
        help="print the public key of a key file or SigningKey block",
        description="Print the armored public key (what users import) of --file or --block.",
    )
    exp.add_argument("--file", type=Path, help="armored secret key file")
    exp.add_argument("--block", help="SigningKey block name (needs PREFECT_API_URL)")

    reap = commands.add_parser(
        "reap",
        parents=[options.provider("local", "machines to check (default local)"), options.state_dir()],
        help="delete machines whose release is over or that outlived a TTL (needs PREFECT_API_URL)",
        description="The backstop for teardown: delete machines tagged 'dropship' whose run has ended (or that "
        "Prefect does not know), or that are older than --ttl-minutes.",
    )
    reap.add_argument("--credentials", default="dropship-digitalocean", help="DigitalOceanCredentials block name")
    reap.add_argument(
        "--ttl-minutes", type=float, default=120.0, help="age after which any machine is deleted (default 120)"
    )

    promote = commands.add_parser(
        "promote",
        parents=[options.manifest(), options.state_dir()],
        help="publish a development build as a stable (or extra) release, without rebuilding (needs PREFECT_API_URL)",
        description="Take the packages a development release published, add them to the suites of --as (a release "
        "tag), sign and publish. No machine is created; the packages keep the version they were built with.",
    )
    promote.add_argument("build", help="release id of the development build (see index.json or `dropship status`)")
    promote.add_argument("--as", dest="as_tag", required=True, metavar="TAG", help="the release tag, e.g. v1.4.2")

    back = commands.add_parser(
        "rollback",
        parents=[options.manifest(), options.state_dir()],
        help="point the repository's `current` back at an earlier release (needs PREFECT_API_URL)",
        description="Switch `current` atomically to --to, or to the release published before the current one.",
    )
    back.add_argument("--to", help="release id to switch to (default: the one before the current)")

    image_commands = options.actions(
        commands, "image", "image_command", help="DigitalOcean snapshots for build machines (needs PREFECT_API_URL)"
    )
    image_build = image_commands.add_parser(
        "build",
        parents=[options.manifest()],
        help="snapshot a droplet with a target's setup, dropship and Prefect installed",
        description="Boot a stock droplet, install the target's setup and this orchestrator's dropship and Prefect, "
        "snapshot it and delete it; print the snapshot's id and name (put the name in the manifest's `image`).",
    )
    image_build.add_argument("--target", help="only this target (default: every target)")

    emu = commands.add_parser(
        "emulator",
        help="serve the DigitalOcean API emulator on 127.0.0.1",
        description="Serve the subset of DigitalOcean API v2 that dropship uses. Droplets are containers of the stock "
        "debian-12-x64 image (or a snapshot) in a dockerd the emulator owns, booted by cloud-init, each in a network of "
        "its own: reached on its own loopback address, reaching only Debian's mirror, PyPI and what --publish names; "
        "--machines processes boots local machines instead (sshd + user_data on this host). "
        "Runs until interrupted, then deletes its droplets.",
    )
    emu.add_argument("--port", type=int, default=8090, help="HTTP port on 127.0.0.1 (default 8090)")
    emu.add_argument(
        "--token",
        default=os.environ.get("DIGITALOCEAN_TOKEN", ""),
        help="the token clients must send (default: $DIGITALOCEAN_TOKEN)",
    )
    emu.add_argument(
        "--machines",
        choices=["containers", "processes"],
        default="containers",
        help="what plays a droplet: a container (default; needs root and dockerd) or local processes",
    )
    emu.add_argument(
        "--state",
        type=Path,
        default=Path("emulator-state"),
        help="folder for the droplets' machines and the emulator's dockerd data "
        "(default ./emulator-state, a few hundred MB; delete it when done)",
    )
    emu.add_argument(
        "--dockerd-dir",
        type=Path,
        help="folder of the emulator's own dockerd (default: <state>/dockerd; socket under /tmp)",
    )
    emu.add_argument(
        "--ssh-port", type=int, help="SSH port of every droplet (default 22 for containers, 2222 for processes)"
    )
    emu.add_argument(
        "--publish",
        action="append",
        default=[],
        metavar="NAME:PORT=HOST:PORT",
        help="let droplets reach NAME:PORT, relayed to HOST:PORT of this machine (repeatable), e.g. "
        "orchestrator.dropship.test:4200=127.0.0.1:4200 for the Prefect API",
    )
    emu.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="FAULT",
        help="rate-limit[:N], server-error[:N], stuck-new, slow-boot[:S], delete-error[:N], quota, "
        "create-then-5xx[:N], 404-after-create[:N], pending-event-on-delete[:N] (repeatable)",
    )
    _server_parser(commands)
    return parser


def _server_parser(commands: Any) -> None:
    actions = options.actions(
        commands,
        "server",
        "server_command",
        help="run the orchestrator's Prefect server (embedded, or PostgreSQL + Redis with API replicas)",
        description="The Prefect server releases run on. See docs/orchestrator.md.",
    )
    start = actions.add_parser(
        "start",
        parents=[options.server_stack()],
        help="start the server and keep it up until SIGTERM",
        description="No options: the embedded SQLite server. With --database and --redis: migrations once, "
        "--api-replicas API servers without services (one after the other), one services process, and nginx "
        "in front on --host/--port. Children that die are restarted; SIGTERM stops them all.",
    )
    start.add_argument(
        "--database",
        default=os.environ.get("DROPSHIP_DATABASE_URL"),
        help="postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB (default: $DROPSHIP_DATABASE_URL)",
    )
    start.add_argument(
        "--redis",
        default=os.environ.get("DROPSHIP_REDIS_URL"),
        help="redis://HOST:PORT/DB (default: $DROPSHIP_REDIS_URL)",
    )
    start.add_argument(
        "--public-api-url",
        help="API URL the UI uses when a TLS proxy is in front, "
        "e.g. https://prefect.example.org/api (default: this server's own)",
    )
    units = actions.add_parser(
        "units",
        parents=[options.server_stack()],
        help="print systemd unit files for the orchestrator machine",
        description="Print dropship-server.service and dropship-worker.service, separated by a line "
        "'# ---- NAME'; or write them into --out DIR.",
    )
    units.add_argument(
        "--env-file",
        type=Path,
        default=Path("/etc/dropship/server.env"),
        help="file with DROPSHIP_DATABASE_URL and DROPSHIP_REDIS_URL (default /etc/dropship/server.env)",
    )
    units.add_argument("--dropship", help="path of the dropship command (default: the one running)")
    units.add_argument("--out", type=Path, help="write the units into this folder instead of printing them")


def _server(args: argparse.Namespace) -> int:
    import shutil

    from dropship.orchestrator import Orchestrator, StackConfig, systemd_units

    if args.server_command == "units":
        dropship = args.dropship or shutil.which("dropship") or str(Path(sys.executable).with_name("dropship"))
        units = systemd_units(
            dropship=dropship,
            home=args.home,
            env_file=args.env_file,
            host=args.host,
            port=args.port,
            api_replicas=args.api_replicas,
            auth_string_file=args.auth_string_file,
        )
        for name, text in units.items():
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / name).write_text(text)
                print(args.out / name)
            else:
                print(f"# ---- {name}\n{text}")
        return 0
    config = StackConfig(
        home=args.home,
        host=args.host,
        port=args.port,
        database=args.database,
        redis=args.redis,
        api_replicas=args.api_replicas,
        auth_string_file=args.auth_string_file,
        public_api_url=args.public_api_url,
    )
    Orchestrator(config, echo=lambda line: print(line, flush=True)).run()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from dropship.prefect_server import LocalPrefectServer

    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    server = None
    if not options.api_url():
        print(f"starting a local Prefect server (SQLite in {workdir / 'prefect'}) ...", flush=True)
        server = LocalPrefectServer(workdir / "prefect")
        server.start()
        if server.stale_pid:
            print(f"stopped the Prefect server (pid {server.stale_pid}) a killed demo left running", flush=True)
        server.export_env()
        print(f"Prefect UI: {server.ui_url}", flush=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        from cli.run import log_path, quiet_prefect

        log_file = log_path(workdir, f"demo-{args.tag}")
        print(f"releasing the example hello {args.tag} (log: {log_file})", flush=True)
        with quiet_prefect(log_file, verbose=args.verbose):
            from flows.demo import run_demo

            ok, message = run_demo(
                workdir,
                args.tag,
                provider=args.provider,
                do_endpoint=args.do_endpoint,
                image=args.image,
                worker_api_url=args.worker_api_url,
            )
    finally:
        if server is not None:
            server.stop()
    if ok and server is None:  # the Prefect server in $PREFECT_API_URL still runs: its UI shows the release
        print(f"\n{message}")
    elif ok:
        print(f"\n{message}\n\nThe release in the Prefect UI again: dropship ui --workdir {workdir}")
    else:
        print(message, file=sys.stderr)
    return 0 if ok else 1


def _init(args: argparse.Namespace) -> int:
    from dropship.scaffold import write_manifest

    path = write_manifest(
        args.dir,
        name=args.name,
        arches=args.arches or ["amd64", "arm64"],
        formats=args.formats or ["deb", "rpm"],
        force=args.force,
    )
    print(f"wrote {path}: replace each target's build command, then run `dropship check --manifest {path}`")
    return 0


def _release(args: argparse.Namespace) -> int:
    options.need_api("the build machines' workers take their work from it")
    if args.submit:
        from deployments.runs import RELEASE_TAG, submit

        if not args.tag or args.ref:
            raise DropshipError("--submit starts the release-tag deployment: give a tag, not --ref")
        params: dict[str, object] = {"tag": args.tag, "dry_run": args.dry_run, "force": args.force}
        if args.targets:
            params["targets"] = args.targets
        run_id = submit(RELEASE_TAG, params)
        print(f"submitted {args.tag}: flow run {run_id} of {RELEASE_TAG}; `dropship status` follows it")
        return 0
    # Before Prefect is imported: this process's many short-lived clients skip the CSRF
    # round trip when the server does not want one (dropship.orchestrator.client_env).
    from dropship.orchestrator import client_env

    for name, value in client_env(options.api_url(), os.environ.get("PREFECT_API_AUTH_STRING")).items():
        os.environ.setdefault(name, value)
    from cli.run import run_release

    return run_release(args)


def _reap(args: argparse.Namespace) -> int:
    options.need_api("the reaper asks it whether each machine's run is over")
    from flows.reap import reap

    deleted = reap(
        provider=args.provider,
        workdir=str(args.workdir) if args.workdir else None,
        credentials=args.credentials,
        ttl_minutes=args.ttl_minutes,
    )
    print("\n".join(deleted) if deleted else "nothing to reap")
    return 0


def _image(args: argparse.Namespace) -> int:
    options.need_api("the image build runs as a flow and reads the DigitalOceanCredentials block")
    from flows.image import image_build

    state = image_build(manifest=str(args.manifest), target=args.target, return_state=True)
    return _finish(state, "image build")


def _finish(state: Any, what: str, say: Callable[[Any], str] | None = None) -> int:
    """The exit code of a flow's run: 0 after printing `say(its return value)`, or 1 after printing
    why it failed (one line)."""
    if not state.is_completed():
        print(f"dropship: {what} failed: {state.message}", file=sys.stderr)
        return 1
    if say is not None:
        print(say(state.result()))
    return 0


def _promote(args: argparse.Namespace) -> int:
    options.need_api("the promotion runs as a flow and holds the publish lock there")
    from flows.promote import promote

    state = promote(
        manifest=str(args.manifest),
        build=args.build,
        as_tag=args.as_tag,
        workdir=str(args.workdir) if args.workdir else None,
        return_state=True,
    )
    return _finish(
        state, "promotion", lambda r: f"promoted {r['promoted_from']} as {r['tag']}: release {r['release_id']}"
    )


def _rollback(args: argparse.Namespace) -> int:
    options.need_api("the rollback runs as a flow and holds the publish lock there")
    from flows.rollback import rollback

    state = rollback(
        manifest=str(args.manifest), to=args.to, workdir=str(args.workdir) if args.workdir else None, return_state=True
    )
    return _finish(state, "rollback", lambda r: f"current: {r['from']} -> {r['to']}")


def _status(args: argparse.Namespace) -> int:
    options.need_api("the releases are runs on that server")
    import json

    from deployments.runs import recent_releases

    rows = recent_releases(args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no release, promotion or rollback has run yet")
        return 0
    columns = ("start", "deployment", "what", "state", "seconds", "name", "id")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))
    return 0


def _webhook(args: argparse.Namespace) -> int:
    options.need_api("the receiver creates flow runs there")
    import logging

    from blocks.values import require_block
    from blocks.webhook import WebhookSecrets
    from deployments.runs import release_starter
    from dropship.manifest import load_manifest
    from dropship.webhook import create_app, serve

    manifest = load_manifest(args.manifest)
    try:
        secrets = require_block(WebhookSecrets, args.secrets_block).secrets()
    except ValueError as exc:
        raise DropshipError(f"no WebhookSecrets block named {args.secrets_block!r}: {exc}") from exc
    if not (secrets.gitlab_token or secrets.github_secret):
        raise DropshipError(f"block {args.secrets_block!r} has neither a GitLab token nor a GitHub secret")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(manifest, secrets, release_starter(args.deployment))
    print(f"webhook receiver on http://{args.host}:{args.port}/hooks/release -> {args.deployment}", flush=True)
    serve(app, args.host, args.port)
    return 0


def _deployments(args: argparse.Namespace) -> int:
    options.need_api("that is where the deployments go")
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from prefect.client.schemas.schedules import CronSchedule

    from deployments import Settings
    from deployments.apply import apply
    from dropship.manifest import load_manifest

    manifest = args.manifest.resolve()
    load_manifest(manifest)
    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise DropshipError(f"--timezone {args.timezone!r} is not an IANA timezone") from exc
    try:
        CronSchedule(cron=args.weekly_cron, timezone=args.timezone)
    except ValueError as exc:
        raise DropshipError(f"--weekly-cron {args.weekly_cron!r} is not a cron expression") from exc
    settings = Settings(
        manifest=str(manifest),
        workdir=str(args.workdir.resolve()) if args.workdir else None,
        weekly_cron=args.weekly_cron,
        timezone=args.timezone,
        weekly_ref=args.weekly_ref,
        reap_minutes=args.reap_minutes,
        provider=args.provider,
        machines_limit=args.machines,
    )
    apply(settings, echo=lambda line: print(line, flush=True))
    return 0


def _keys(args: argparse.Namespace) -> int:
    from dropship.signing import Signer, generate_key

    if args.keys_command == "generate":
        if not args.out and not args.block:
            raise DropshipError("say where the key goes: --out FILE and/or --block NAME")
        if args.out and args.out.exists():
            raise DropshipError(f"{args.out} exists; a signing key is never overwritten")
        print(f"generating an ed25519 key for {args.name} <{args.email}> ...", flush=True)
        key = generate_key(args.name, args.email, expire_days=args.expire_days)
        if args.out:
            args.out.touch(mode=0o600, exist_ok=False)
            args.out.write_text(key)
            print(f"secret key written to {args.out} (mode 0600)")
        if args.block:
            options.need_api("blocks live on the Prefect server")
            from pydantic import SecretStr

            from blocks.signing_key import SigningKey

            SigningKey(private_key=SecretStr(key)).save(args.block, overwrite=False)
            print(f"saved as SigningKey block {args.block!r}")
        with Signer([key]) as signer:
            print(f"fingerprint: {signer.fingerprints[0]}")
        return 0
    if bool(args.file) == bool(args.block):
        raise DropshipError("give exactly one of --file or --block")
    if args.block:
        options.need_api("blocks live on the Prefect server")
        from blocks.signing_key import SigningKey
        from blocks.values import require_block

        with require_block(SigningKey, args.block).signer() as signer:
            print(signer.public_key_armored(), end="")
        return 0
    try:
        text = args.file.read_text()
    except OSError as exc:
        raise DropshipError(f"cannot read {args.file}: {exc.strerror}") from exc
    with Signer([text]) as signer:
        print(signer.public_key_armored(), end="")
    return 0


def _emulator(args: argparse.Namespace) -> int:
    from dropship.emulator.server import EmulatorServer
    from dropship.emulator.state import Emulator

    if not args.token:
        raise DropshipError("give the emulator a token: --token or $DIGITALOCEAN_TOKEN")
    from dropship.emulator.dockerd import DockerDaemon

    published = {}
    for spec in args.publish:
        public, sep, real = spec.partition("=")
        if not sep:
            raise DropshipError(f"--publish {spec!r}: write NAME:PORT=HOST:PORT")
        published[public] = real
    docker = DockerDaemon(args.dockerd_dir).start() if args.machines == "containers" and args.dockerd_dir else None
    try:
        emulator = Emulator(
            args.state.resolve(),
            token=args.token,
            ssh_port=args.ssh_port,
            machines=args.machines,
            docker=docker,
            internet=published,
        )
    except BaseException:
        if docker is not None:
            docker.stop()
        raise
    for fault in args.fault:
        emulator.faults.apply(fault)
    server = EmulatorServer(emulator, args.port).start()
    line = f"DigitalOcean API emulator on {server.url} ({args.machines}; droplets' SSH on port {emulator.ssh_port})"
    reach = ", ".join(f"{name}:{port}" for name, port in sorted(emulator.internet.routes()))
    lines = [f"{line}; Ctrl-C stops it", *([f"droplets reach {reach}"] if args.machines == "containers" else [])]
    options.serve_until_stopped(lines, server.stop, *([docker.stop] if docker else []))
    return 0


def _absolute_paths(args: argparse.Namespace) -> None:
    """Every path option made absolute once, here: flows and subprocesses
    (`git archive`, workers) run in other folders, where a relative path
    would name something else."""
    for name, value in vars(args).items():
        if isinstance(value, Path):
            setattr(args, name, value.expanduser().absolute())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    redact_logs()
    _absolute_paths(args)
    if not getattr(args, "verbose", False):  # Prefect's "Still processing items" as its workers drain at exit
        for service in ("EventsWorker", "APILogWorker"):
            logging.getLogger(service).setLevel(logging.ERROR)
    # Before any command imports Prefect: its client retries 429/502/503/504
    # and dropped connections with back-off (dropship.orchestrator.CLIENT_RETRY_ENV).
    from dropship.orchestrator import apply_client_retry_env

    apply_client_retry_env()
    handlers = {
        "demo": _demo,
        "init": _init,
        "release": _release,
        "reap": _reap,
        "emulator": _emulator,
        "promote": _promote,
        "rollback": _rollback,
        "status": _status,
        "webhook": _webhook,
        "deployments": _deployments,
        "keys": _keys,
        "server": _server,
        "image": _image,
    }
    from cli.setup import HANDLERS

    handlers.update(HANDLERS)
    try:
        return handlers[args.command](args)
    except DropshipError as exc:
        print(f"dropship: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dropship: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
