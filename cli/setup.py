"""The set-up a user does once: `dropship blocks`, `dropship check`, `dropship ui`.

`blocks` creates or updates the blocks a manifest names, from flags or, on a
terminal, from prompts (secrets with getpass, never echoed, never printed);
without a terminal a missing value is a one-line error naming the flag.
`check` prints one line per thing a release needs (`dropship.checks`) and
creates nothing. `ui` serves the Prefect UI on a workdir's database.
Prefect is imported inside the handlers only.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from cli import options
from dropship.checks import FAILED, OK, Check
from dropship.errors import ConfigError, DropshipError
from dropship.manifest import Manifest, load_manifest
from dropship.process import run


def add_commands(commands: Any) -> None:
    """Register blocks, check and ui on the CLI's subparsers."""
    blocks = commands.add_parser(
        "blocks",
        parents=[options.manifest()],
        help="create or update the blocks dropship.toml names (needs PREFECT_API_URL)",
        description="Create or update the SigningKey, RepoServer and (for droplets) DigitalOceanCredentials "
        "blocks the manifest names, and the WebhookSecrets block, from flags or prompts. A block that exists "
        "and gets no flag is left as it is. Secrets are read from files, environment variables or a hidden "
        "prompt, and never printed.",
    )
    key = blocks.add_argument_group("signing key")
    key.add_argument("--signing-key-file", type=Path, metavar="FILE", help="armored secret key to store")
    key.add_argument("--generate", metavar="NAME", help="generate an ed25519 key with this user id name instead")
    key.add_argument("--email", help="user id email of --generate")
    key.add_argument("--expire-days", type=int, default=730, help="validity of --generate in days (default 730)")
    repo = blocks.add_argument_group("repository server")
    repo.add_argument(
        "--repo-path",
        type=Path,
        metavar="DIR",
        help="publish into this folder here; with --repo-host, the folder on that server",
    )
    repo.add_argument("--repo-host", metavar="HOST", help="publish over SSH to this server")
    repo.add_argument("--repo-port", type=int, default=22, metavar="PORT", help="its SSH port (default 22)")
    repo.add_argument("--repo-user", default="dropship", metavar="USER", help="its SSH user (default dropship)")
    repo.add_argument("--repo-key-file", type=Path, metavar="FILE", help="unencrypted OpenSSH private key of that user")
    repo.add_argument("--repo-host-key", metavar="LINE", help="the server's host public key line, pinned")
    repo.add_argument(
        "--repo-host-key-scan",
        action="store_true",
        help="read the host key once with ssh-keyscan and show its fingerprint (check it!)",
    )
    repo.add_argument("--repo-base-url", metavar="URL", help="URL at which clients reach <path>/current")
    do = blocks.add_argument_group("DigitalOcean (provider digitalocean)")
    do.add_argument("--do-token-env", metavar="VAR", help="environment variable holding the API token")
    do.add_argument("--do-endpoint", metavar="URL", help="API endpoint (default DigitalOcean's; the emulator's URL)")
    do.add_argument("--provider", choices=options.PROVIDERS, help="override the manifest's machine provider")
    hook = blocks.add_argument_group("webhook secrets (dropship webhook)")
    hook.add_argument(
        "--webhook-block", default="dropship-webhook", metavar="NAME", help="block name (default dropship-webhook)"
    )
    hook.add_argument("--webhook-gitlab-token-env", metavar="VAR", help="environment variable holding the GitLab token")
    hook.add_argument(
        "--webhook-github-secret-env", metavar="VAR", help="environment variable holding the GitHub secret"
    )

    commands.add_parser(
        "check",
        parents=[options.manifest(), options.provider()],
        help="say what a release still needs, without creating a machine (needs PREFECT_API_URL)",
        description="Load the manifest and every block it names; check the signing key's expiry, the machine "
        "provider (local: sshd; digitalocean: token, sizes, regions) and that the repository server is "
        "reachable and writable. One line per check with the command that fixes it; exit 1 if any is not ok.",
    )

    ui = commands.add_parser(
        "ui",
        parents=[options.demo_dir()],
        help="serve the Prefect UI (and API) on a workdir's database, until Ctrl-C",
        description="Start a local Prefect server on 127.0.0.1 with its SQLite database in DIR/prefect (the one "
        "`dropship demo --workdir DIR` used), print its URL and the PREFECT_API_URL to export, and run until "
        "interrupted.",
    )
    ui.add_argument("--port", type=int, default=4200, help="port on 127.0.0.1 (default 4200; 0: any free port)")


# --- prompts ---------------------------------------------------------------


def _interactive() -> bool:
    return sys.stdin.isatty()


def _ask(prompt: str, flag: str, *, secret: bool = False) -> str:
    """A value from the terminal, or a one-line error naming the flag when there is none."""
    if not _interactive():
        raise ConfigError(f"missing {flag} (stdin is not a terminal, so dropship can't ask)")
    value = getpass.getpass(prompt) if secret else input(prompt)
    if not value.strip():
        raise ConfigError(f"no value given: pass {flag}")
    return value.strip()


def _env_secret(var: str, flag: str) -> str:
    value = os.environ.get(var, "")
    if not value:
        raise ConfigError(f"{flag} {var}: the environment variable {var} is not set or empty")
    return value


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def host_key_fingerprint(line: str) -> str:
    """SHA256:... as ssh-keygen -l shows it."""
    parts = line.split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, ValueError) as exc:
        raise ConfigError(f"not an OpenSSH public key line: {line[:40]!r}") from exc
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def scan_host_key(host: str, port: int) -> str:
    """The server's host key line (ed25519 preferred), read once with ssh-keyscan."""
    output = run(
        ["ssh-keyscan", "-T", "10", "-p", str(port), "-t", "ed25519,ecdsa,rsa", host],
        what=f"ssh-keyscan of {host}:{port}",
        timeout=30,
    )
    keys = [line.split(None, 1)[1] for line in output.splitlines() if line and not line.startswith("#") and " " in line]
    if not keys:
        raise ConfigError(f"ssh-keyscan got no host key from {host}:{port}: is sshd running there?")
    keys.sort(key=lambda k: 0 if k.startswith("ssh-ed25519") else 1)
    return keys[0].strip()


# --- blocks ----------------------------------------------------------------


def _save(block: Any, name: str, existed: bool, say: Callable[[str], None], detail: str) -> None:
    block.save(name, overwrite=True)
    say(f"{'updated' if existed else 'created'} {type(block).__name__} block {name!r}: {detail}")


def _signing_key(args: argparse.Namespace, manifest: Manifest, say: Callable[[str], None]) -> None:
    from blocks.signing_key import SigningKey
    from blocks.values import load_block
    from dropship.signing import Signer, generate_key

    name = manifest.blocks.signing_key
    existing = load_block(SigningKey, name)
    if args.signing_key_file and args.generate:
        raise ConfigError("give --signing-key-file or --generate, not both")
    if not args.signing_key_file and not args.generate:
        if existing is not None:
            say(f"unchanged SigningKey block {name!r}")
            return
        answer = (
            ""
            if not _interactive()
            else input(f"signing key block {name!r}: armored secret key file (empty: generate a new key): ").strip()
        )
        if not _interactive():
            raise ConfigError(
                f"signing key block {name!r} does not exist: pass --signing-key-file FILE or "
                "--generate NAME --email E (stdin is not a terminal, so dropship can't ask)"
            )
        if answer:
            args.signing_key_file = Path(answer).expanduser().absolute()
        else:
            args.generate = _ask("key user id name (e.g. 'Example release key'): ", "--generate NAME")
    if args.signing_key_file:
        armored = _read(args.signing_key_file, "signing key file")
    else:
        email = args.email or _ask("key user id email: ", "--email E")
        say(f"generating an ed25519 key for {args.generate} <{email}> ...")
        armored = generate_key(args.generate, email, expire_days=args.expire_days)
    with Signer([armored], min_validity=timedelta(0)) as signer:
        fingerprints = ", ".join(signer.fingerprints)
    _save(SigningKey(private_key=SecretStr(armored)), name, existing is not None, say, f"key {fingerprints}")


def _repo_server(args: argparse.Namespace, manifest: Manifest, say: Callable[[str], None]) -> None:
    from blocks.repo_server import RepoServer
    from blocks.values import load_block

    name = manifest.blocks.repo_server
    existing = load_block(RepoServer, name)
    if not args.repo_path and not args.repo_host:
        if existing is not None:
            say(f"unchanged RepoServer block {name!r}")
            return
        if not _interactive():
            raise ConfigError(
                f"repository server block {name!r} does not exist: pass --repo-path DIR (a folder here) "
                "or --repo-host H --repo-path DIR --repo-key-file F --repo-host-key-scan "
                "(stdin is not a terminal, so dropship can't ask)"
            )
        answer = _ask("repository: a folder here, or user@host[:port]:/path on an SSH server: ", "--repo-path DIR")
        if "@" in answer and ":" in answer:
            user, _, rest = answer.partition("@")
            host, _, rest = rest.partition(":")
            port, _, path = rest.partition(":") if not rest.startswith("/") else ("22", "", rest)
            args.repo_user, args.repo_host, args.repo_port, args.repo_path = user, host, int(port), Path(path)
            args.repo_key_file = Path(_ask("its SSH private key file: ", "--repo-key-file F")).expanduser().absolute()
            args.repo_host_key_scan = not args.repo_host_key
        else:
            args.repo_path = Path(answer).expanduser().absolute()
    if not args.repo_path:
        raise ConfigError("--repo-host needs --repo-path: the repository's folder on that server")
    if not args.repo_host:
        _save(
            RepoServer(path=str(args.repo_path), base_url=args.repo_base_url),
            name,
            existing is not None,
            say,
            f"folder {args.repo_path}",
        )
        return
    if not args.repo_key_file:
        raise ConfigError("--repo-host needs --repo-key-file FILE: the SSH private key of --repo-user")
    private_key = _read(args.repo_key_file, "SSH key file")
    host_key = args.repo_host_key
    if args.repo_host_key_scan:
        host_key = scan_host_key(args.repo_host, args.repo_port)
        say(
            f"{args.repo_host}:{args.repo_port} host key {host_key.split()[0]} {host_key_fingerprint(host_key)} "
            "(read once with ssh-keyscan and pinned: compare it with the server's `ssh-keygen -lf`)"
        )
    if not host_key:
        raise ConfigError("--repo-host needs the server's host key: --repo-host-key LINE or --repo-host-key-scan")
    host_key_fingerprint(host_key)
    block = RepoServer(
        path=str(args.repo_path),
        base_url=args.repo_base_url,
        host=args.repo_host,
        port=args.repo_port,
        user=args.repo_user,
        ssh_private_key=SecretStr(private_key),
        host_public_key=host_key,
    )
    _save(
        block,
        name,
        existing is not None,
        say,
        f"{args.repo_user}@{args.repo_host}:{args.repo_port}:{args.repo_path}, host key {host_key_fingerprint(host_key)}",
    )


def _digitalocean(args: argparse.Namespace, manifest: Manifest, say: Callable[[str], None]) -> None:
    from blocks.digitalocean import DigitalOceanCredentials
    from blocks.values import load_block

    if (args.provider or manifest.machines.provider) != "digitalocean" and not args.do_token_env:
        return
    name = manifest.machines.credentials
    existing = load_block(DigitalOceanCredentials, name)
    if not args.do_token_env and existing is not None and not args.do_endpoint:
        say(f"unchanged DigitalOceanCredentials block {name!r}")
        return
    token: SecretStr | None
    if args.do_token_env:
        token = SecretStr(_env_secret(args.do_token_env, "--do-token-env"))
    elif existing is not None:
        token = existing.token  # None when the block names token_env or token_file instead
    else:
        token = SecretStr(_ask("DigitalOcean API token (hidden): ", "--do-token-env VAR", secret=True))
    fields: dict[str, Any] = existing.model_dump(exclude={"token"}) if existing is not None else {}
    fields = {k: v for k, v in fields.items() if not k.startswith("_") and k != "block_type_slug"}
    if args.do_endpoint:
        fields["endpoint"] = args.do_endpoint
    block = DigitalOceanCredentials(token=token, **fields)
    _save(
        block,
        name,
        existing is not None,
        say,
        f"token from {args.do_token_env or 'the prompt'}, endpoint {block.endpoint}",
    )


def _webhook(args: argparse.Namespace, say: Callable[[str], None]) -> None:
    from blocks.values import load_block
    from blocks.webhook import WebhookSecrets

    if not args.webhook_gitlab_token_env and not args.webhook_github_secret_env:
        return
    existing = load_block(WebhookSecrets, args.webhook_block)
    gitlab = existing.gitlab_token if existing is not None else None
    github = existing.github_secret if existing is not None else None
    block = WebhookSecrets(
        gitlab_token=SecretStr(_env_secret(args.webhook_gitlab_token_env, "--webhook-gitlab-token-env"))
        if args.webhook_gitlab_token_env
        else gitlab,
        github_secret=SecretStr(_env_secret(args.webhook_github_secret_env, "--webhook-github-secret-env"))
        if args.webhook_github_secret_env
        else github,
    )
    forges = [f for f, v in (("GitLab", block.gitlab_token), ("GitHub", block.github_secret)) if v]
    _save(block, args.webhook_block, existing is not None, say, f"secrets for {' and '.join(forges)}")


def blocks_command(args: argparse.Namespace) -> int:
    options.need_api("the blocks live on it", reachable=True)
    manifest = load_manifest(args.manifest)

    def say(line: str) -> None:
        print(line, flush=True)

    failed = 0
    steps: list[Callable[[], None]] = [
        lambda: _signing_key(args, manifest, say),
        lambda: _repo_server(args, manifest, say),
        lambda: _digitalocean(args, manifest, say),
        lambda: _webhook(args, say),
    ]
    for step in steps:  # each block on its own: one that can't be made doesn't stop the others
        try:
            step()
        except ConfigError as exc:
            print(f"dropship: {exc}", file=sys.stderr, flush=True)
            failed += 1
    if failed:
        return 1
    print(f"next: dropship check --manifest {args.manifest}")
    return 0


# --- check -----------------------------------------------------------------


def check_command(args: argparse.Namespace) -> int:
    try:
        manifest = load_manifest(args.manifest)
    except DropshipError as exc:
        print(Check("manifest", FAILED, str(exc), "fix it, or `dropship init` to start one").line())
        return 1
    lines = [
        Check(
            "manifest",
            OK,
            f"{args.manifest} ({manifest.project.name}, {len(manifest.targets)} target{'' if len(manifest.targets) == 1 else 's'})",
        )
    ]
    url = options.api_url()
    fix_server = "dropship ui --workdir DIR (or prefect server start), then export PREFECT_API_URL"
    if not url:
        lines.append(Check("Prefect server", FAILED, "PREFECT_API_URL is not set", fix_server))
        print("\n".join(c.line() for c in lines))
        return 1
    from blocks.values import load_inputs
    from dropship.checks import run_checks

    try:
        inputs = load_inputs(manifest, args.provider)
    except DropshipError as exc:
        lines.append(Check("Prefect server", FAILED, str(exc).splitlines()[0], fix_server))
        inputs = None
    except Exception as exc:  # noqa: BLE001 - httpx/Prefect: the server is not there
        lines.append(Check("Prefect server", FAILED, f"{url} can't be reached ({type(exc).__name__})", fix_server))
        inputs = None
    if inputs is not None:
        lines.append(Check("Prefect server", OK, url))
        lines += run_checks(manifest, str(args.manifest), inputs, provider=args.provider)
    for check in lines:
        print(check.line(), flush=True)
    return 0 if all(c.ok for c in lines) else 1


# --- ui --------------------------------------------------------------------


def ui_command(args: argparse.Namespace) -> int:
    from dropship.prefect_server import LocalPrefectServer

    home = args.workdir / "prefect"
    fresh = not (home / "prefect.db").exists()
    server = LocalPrefectServer(home, port=args.port or 0)
    print(
        f"starting the Prefect server on {'a new' if fresh else 'the'} database {home / 'prefect.db'} ...", flush=True
    )
    server.start()
    options.serve_until_stopped(
        [f"Prefect UI: {server.ui_url}", f"export PREFECT_API_URL={server.api_url}", "Ctrl-C stops it"], server.stop
    )
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "blocks": blocks_command,
    "check": check_command,
    "ui": ui_command,
}
