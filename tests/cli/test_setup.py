"""A newcomer's path, typed as a user would: a Prefect server (`dropship ui`),
`dropship init`, `dropship blocks`, `dropship check`, `dropship release`,
on a project the test makes; then real apt-get fetches the package. Also:
what is refused before any test or machine, a failed build's cause once,
`depends_on` as a build graph, and the UI (settings and screenshots)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dropship.ledger import lives
from tests.browser import Browser, png_colours
from tests.clients import AptClient
from tests.projects import DROPSHIP, dropship, env_for, git, make_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`dropship ui --workdir W --port 0`, as the README says to start one; yields its URLs."""
    workdir = tmp_path_factory.mktemp("ui")
    process = subprocess.Popen(
        [DROPSHIP, "ui", "--workdir", str(workdir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
    )
    assert process.stdout is not None
    lines: list[str] = []
    api = ui = ""
    deadline = time.monotonic() + 240
    while not api and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith("Prefect UI: "):
            ui = line.split(": ", 1)[1].strip()
        if line.startswith("export PREFECT_API_URL="):
            api = line.split("=", 1)[1].strip()
    assert api and ui, "\n".join(lines)
    yield {"api": api, "ui": ui, "workdir": workdir, "lines": lines}
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _edit(manifest: Path, old: str, new: str) -> None:
    text = manifest.read_text()
    assert re.search(old, text, flags=re.MULTILINE), old
    manifest.write_text(re.sub(old, new, text, count=1, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def published(server: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The five commands from an empty project folder to a published repository."""
    base = tmp_path_factory.mktemp("newcomer")
    project = make_project(base / "tiny")
    env = env_for(server["api"], base / "home")
    repo = base / "repo"
    commands: list[tuple[str, Any]] = []

    def run(*argv: str) -> Any:
        done = dropship(*argv, cwd=project, env=env)
        commands.append((" ".join(argv), done))
        return done

    init = run("init", "--arch", "amd64", "--format", "deb")
    assert init.returncode == 0, init.output
    _edit(project / "dropship.toml", r"^build = .*$", 'build = ["sh", "build.sh", "tiny"]')
    git(project, "add", "dropship.toml")
    git(project, "commit", "-qm", "dropship manifest")
    git(project, "tag", "-a", "v1.0.0", "-m", "v1.0.0")
    blocks = run(
        "blocks", "--generate", "tiny release key", "--email", "tiny@example.invalid", "--repo-path", str(repo)
    )
    assert blocks.returncode == 0, blocks.output
    check = run("check")
    assert check.returncode == 0, check.output
    release = run("release", "v1.0.0")
    assert release.returncode == 0, release.output
    summary = json.loads((base / "home" / "summary.json").read_text())
    return {
        "project": project,
        "env": env,
        "repo": repo,
        "home": base / "home",
        "commands": commands,
        "check": check,
        "release": release,
        "blocks": blocks,
        "summary": summary,
    }


def test_five_commands_publish_a_package_apt_fetches(
    published: dict[str, Any], serve: Callable[[Path], str], tmp_path: Path
) -> None:
    release, check = published["release"], published["check"]
    assert [line.split()[0] for line in check.stdout.splitlines()] == ["ok"] * 5
    out = release.stdout
    assert re.search(r"^✓ build amd64-deb \d+\.\d s: tiny_1\.0\.0_amd64\.deb$", out, flags=re.MULTILINE), out
    assert re.search(
        r"^✓ publish \d+\.\d s: signed the APT repository of stable; uploaded \d+ files; current -> ",
        out,
        flags=re.MULTILINE,
    ), out
    assert "reused" not in out and "Looks like you're deploying" not in release.output
    assert "Concurrency limits" not in release.output and "Traceback" not in release.output
    current = published["repo"] / "current"
    assert f"Repository: {current}" in out and "apt-get install tiny=1.0.0" in out and "dnf" not in out
    assert f"Summary:    {published['home'] / 'summary.json'}" in out
    summary = published["summary"]
    assert summary["status"] == "published" and summary["targets"][0]["status"] == "built"
    # secrets: the generated key never reaches the terminal
    assert "PRIVATE KEY" not in published["blocks"].output
    apt = AptClient(tmp_path / "apt", serve(current), current / "keys" / "tiny-release.gpg", "stable")
    apt.update()
    assert "1.0.0" in apt.policy("tiny")
    assert run_packaged_hello_named(apt.download("tiny"), tmp_path / "root", "tiny") == "tiny 1.0.0"
    total = sum(len(done.stdout.splitlines()) + len(done.stderr.splitlines()) for _, done in published["commands"])
    print(f"\n{len(published['commands'])} dropship commands, {total} lines of output:")
    for argv, done in published["commands"]:
        print(f"$ dropship {argv}\n{done.stdout}{done.stderr}")


def run_packaged_hello_named(deb: Path, into: Path, name: str) -> str:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return subprocess.run([str(into / "usr/bin" / name)], capture_output=True, text=True, check=True).stdout.strip()


def test_release_json_prints_the_summary(published: dict[str, Any]) -> None:
    done = dropship("release", "v1.0.0", "--json", cwd=published["project"], env=published["env"])
    assert done.returncode == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["status"] == "published" and summary["targets"][0]["status"] == "reused"
    assert summary["machines_created"] == 0


def _lacking(server: dict[str, Any], base: Path, name: str) -> tuple[Path, dict[str, str], Path]:
    project = make_project(base / name)
    env = env_for(server["api"], base / "home")
    assert dropship("init", "--name", name, "--arch", "amd64", "--format", "deb", cwd=project, env=env).returncode == 0
    marker = base / "tests-ran"
    _edit(project / "dropship.toml", r"^build = .*$", 'build = ["sh", "build.sh", "tiny"]')
    _edit(project / "dropship.toml", r"^# test = .*$", f'test = ["touch", "{marker}"]')
    git(project, "add", "dropship.toml")
    git(project, "commit", "-qm", "manifest")
    git(project, "tag", "-a", "v1.0.0", "-m", "v1.0.0")
    return project, env, marker


@pytest.mark.parametrize("case", ["no-key", "no-repo", "bad-key", "repo-unwritable"])
def test_release_refuses_what_is_missing_before_tests_or_machines(
    case: str, server: dict[str, Any], tmp_path: Path
) -> None:
    name = f"lacking-{case}"
    project, env, marker = _lacking(server, tmp_path, name)
    if case != "no-key":
        if case == "bad-key":  # stored behind `dropship blocks`' back: an armored header and nothing usable
            script = (
                "import sys; from blocks.signing_key import SigningKey; "
                "SigningKey(private_key='-----BEGIN PGP PRIVATE KEY BLOCK-----\\n\\nAAAA\\n').save(sys.argv[1])"
            )
            subprocess.run(
                [str(Path(DROPSHIP).parent / "python"), "-c", script, f"{name}-signing-key"],
                env=env,
                check=True,
                capture_output=True,
            )
        else:
            done = dropship("blocks", "--generate", "k", "--email", "k@example.invalid", cwd=project, env=env)
            assert "repository server block" in done.stderr and done.returncode == 1  # no repo flag, no terminal
    if case != "no-repo":
        folder = tmp_path / "ro" / "repo"
        if case == "repo-unwritable":
            folder.parent.mkdir()
            (folder.parent / "repo").write_text("a file where the folder should be")
        done = dropship("blocks", "--repo-path", str(folder), cwd=project, env=env)
        assert done.returncode == (1 if case == "no-key" else 0), done.output
    if case == "no-key":
        done = dropship("blocks", "--repo-path", str(tmp_path / "repo"), "--generate", "k", cwd=project, env=env)
        assert done.returncode == 1 and done.stderr.strip() == (
            "dropship: missing --email E (stdin is not a terminal, so dropship can't ask)"
        ), done.output
        from_blocks = dropship("blocks", "--repo-path", str(tmp_path / "repo"), cwd=project, env=env)
        assert from_blocks.returncode == 1 and len(from_blocks.stderr.splitlines()) == 1
        assert "--signing-key-file FILE or --generate NAME --email E" in from_blocks.stderr
    expected = {
        "no-key": rf"^missing signing key block '{name}-signing-key': no such block -> dropship blocks --manifest \S+ --signing-key-file FILE",
        "no-repo": rf"^missing repository server block '{name}-repo': no such block -> dropship blocks --manifest \S+ --repo-path DIR",
        "bad-key": rf"^failed  signing key block '{name}-signing-key': signing key #1 could not be imported.* -> dropship blocks",
        "repo-unwritable": rf"^failed  repository server block '{name}-repo': cannot write into \S+ .* -> dropship blocks",
    }[case]
    check = dropship("check", cwd=project, env=env)
    assert check.returncode == 1 and re.search(expected, check.stdout, flags=re.MULTILINE), check.output
    release = dropship("release", "v1.0.0", cwd=project, env=env)
    assert release.returncode == 1
    # the error says "failed" once: not "release failed: failed  signing key block ..."
    said = expected.replace("^failed  ", "^")
    lines = [line for line in release.output.splitlines() if re.search(said, line.removeprefix("✗ release failed: "))]
    assert len(lines) == 1, release.output
    assert "Traceback" not in release.output and len(release.output.splitlines()) <= 5, release.output
    assert not marker.exists(), "the tests ran before the missing block was found"
    assert not (tmp_path / "home" / "local" / "machines").exists() or not any(
        (tmp_path / "home" / "local" / "machines").iterdir()
    )


def _blocks_with_a_new_key(project: Path, env: dict[str, str], repo: Path) -> None:
    """`dropship blocks`: a generated signing key, and publication into the folder `repo`."""
    done = dropship(
        "blocks", "--generate", "k", "--email", "k@example.invalid", "--repo-path", str(repo), cwd=project, env=env
    )
    assert done.returncode == 0, done.output


def test_a_failed_build_says_its_cause_once(server: dict[str, Any], tmp_path: Path) -> None:
    project, env, _ = _lacking(server, tmp_path, "broken")
    (project / "fail.sh").write_text("echo 'cc: error: frobnicate.c: No such file or directory' >&2\nexit 1\n")
    _edit(project / "dropship.toml", r"^build = .*$", 'build = ["sh", "fail.sh"]')
    git(project, "add", ".")
    git(project, "commit", "-qm", "broken build")
    git(project, "tag", "-d", "v1.0.0")
    git(project, "tag", "-a", "v1.0.0", "-m", "v1.0.0")
    _blocks_with_a_new_key(project, env, tmp_path / "repo")
    done = dropship("release", "v1.0.0", cwd=project, env=env)
    assert done.returncode == 1
    assert done.output.count("frobnicate.c") == 1, done.output
    assert re.search(r"^✗ build amd64-deb: ", done.stdout, flags=re.MULTILINE), done.output
    assert "Traceback" not in done.output
    log = re.search(r"full log: (\S+)", done.stderr)
    assert log and "frobnicate.c" in Path(log.group(1)).read_text()
    verbose = dropship("release", "v1.0.0", "--verbose", cwd=project, env=env)
    assert verbose.returncode == 1 and "Traceback" in verbose.output


GRAPH = """
[project]
name = "graph"
source = "."

[[targets]]
name = "base"
arch = "amd64"
format = "deb"
build = ["sh", "{base}", "base"]
artifacts = ["out/*.deb"]

[[targets]]
name = "app"
arch = "amd64"
format = "deb"
build = ["sh", "build.sh", "app"]
artifacts = ["out/*.deb"]
depends_on = ["base"]

[[targets]]
name = "alone"
arch = "amd64"
format = "deb"
build = ["sh", "build.sh", "alone"]
artifacts = ["out/*.deb"]

[repository]
key_name = "graph-release"

[blocks]
signing_key = "graph-key"
repo_server = "graph-repo"
"""


def test_depends_on_orders_builds_hands_artifacts_over_and_skips_after_a_failure(
    server: dict[str, Any], tmp_path: Path
) -> None:
    project = make_project(tmp_path / "graph")
    (project / "fail.sh").write_text("echo 'base is broken' >&2\nexit 1\n")
    (project / "dropship.toml").write_text(GRAPH.format(base="build.sh"))
    git(project, "add", ".")
    git(project, "commit", "-qm", "graph")
    git(project, "tag", "-a", "v1.0.0", "-m", "v1.0.0")
    env = env_for(server["api"], tmp_path / "home")
    _blocks_with_a_new_key(project, env, tmp_path / "repo")
    done = dropship("release", "v1.0.0", cwd=project, env=env)
    assert done.returncode == 0, done.output
    summary = json.loads((tmp_path / "home" / "summary.json").read_text())
    by_target = {life.target: life for life in lives(tmp_path / "home" / "runs" / summary["run_id"])}
    assert by_target["base"].collected is not None
    assert by_target["app"].created >= by_target["base"].collected  # app's machine only after base's artifacts
    deb = next((tmp_path / "repo" / "current").rglob("app_1.0.0_amd64.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / "app")], check=True)
    assert (tmp_path / "app/usr/share/app/built-with").read_text().split() == ["./base/base_1.0.0_amd64.deb"]

    (project / "dropship.toml").write_text(GRAPH.format(base="fail.sh"))
    git(project, "commit", "-qam", "base broken")
    git(project, "tag", "-a", "v1.0.1", "-m", "v1.0.1")
    failed = dropship("release", "v1.0.1", cwd=project, env=env)
    assert failed.returncode == 1
    assert re.search(r"^- build app: dependency base failed$", failed.stdout, flags=re.MULTILINE), failed.output
    assert re.search(r"^✓ build alone ", failed.stdout, flags=re.MULTILINE), failed.output
    summary = json.loads((tmp_path / "home" / "summary.json").read_text())
    statuses = {t["name"]: (t["status"], t["reason"]) for t in summary["targets"]}
    assert statuses["app"] == ("skipped", "dependency base failed") and statuses["base"][0] == "failed"
    assert {life.target for life in lives(tmp_path / "home" / "runs" / summary["run_id"])} == {"base", "alone"}


def test_ui_knows_its_api_and_shows_the_release(server: dict[str, Any], published: dict[str, Any]) -> None:
    with urllib.request.urlopen(f"{server['ui']}/ui-settings", timeout=30) as response:
        settings = json.loads(response.read())
    assert settings["api_url"] == server["api"]
    summary = published["summary"]
    shots = Path(os.environ.get("DROPSHIP_SCREENSHOTS") or tempfile.mkdtemp(prefix="dropship-ui-"))
    shots.mkdir(parents=True, exist_ok=True)
    with Browser() as browser:
        assert browser.open(
            f"{server['ui']}/runs/flow-run/{summary['run_id']}",
            "document.querySelector('#artifacts') !== null && document.body.innerText.includes('tiny v1.0.0')",
        )
        browser.wait_for("document.body.innerText.includes('Finished in state')", 20)
        run_page = browser.screenshot(shots / "run.png")
        assert browser.click("#artifacts")
        assert browser.wait_for("document.body.innerText.includes('release-progress')", 30)
        artifacts = browser.screenshot(shots / "artifacts.png", height=1800)
    for shot in (run_page, artifacts):
        assert png_colours(shot) > 50, f"{shot} looks blank"
    print(f"\nscreenshots: {run_page} {artifacts}")


def test_blocks_for_an_ssh_server_droplets_and_webhooks_never_print_a_secret(
    server: dict[str, Any], tmp_path: Path
) -> None:
    from dropship.emulator.server import EmulatorServer
    from dropship.emulator.state import Emulator
    from dropship.ports import free_port
    from tests.servers import start_repo_server

    project = make_project(tmp_path / "remote")
    env = env_for(server["api"], tmp_path / "home")
    assert dropship("init", "--arch", "amd64", "--format", "deb", cwd=project, env=env).returncode == 0
    host = start_repo_server(tmp_path / "sshd")
    emulator = Emulator(tmp_path / "emulator", token="dop_v1_secret_token_value", ssh_port=free_port())
    api = EmulatorServer(emulator).start()
    try:
        key_file = tmp_path / "id_ed25519"
        key_file.write_text(host.private_key)
        ep = host.endpoint
        env.update(DO_TOKEN="dop_v1_secret_token_value", HOOK_SECRET="github-hook-secret-value")
        done = dropship(
            "blocks",
            "--generate",
            "k",
            "--email",
            "k@example.invalid",
            "--repo-host",
            ep.host,
            "--repo-port",
            str(ep.port),
            "--repo-user",
            ep.user,
            "--repo-key-file",
            str(key_file),
            "--repo-path",
            str(host.root / "repo"),
            "--repo-host-key-scan",
            "--provider",
            "digitalocean",
            "--do-token-env",
            "DO_TOKEN",
            "--do-endpoint",
            api.url,
            "--webhook-github-secret-env",
            "HOOK_SECRET",
            cwd=project,
            env=env,
        )
        assert done.returncode == 0, done.output
        fingerprint = subprocess.run(
            ["ssh-keygen", "-lf", "-"], input=ep.host_public_key, capture_output=True, text=True, check=True
        ).stdout.split()[1]
        assert f"host key ssh-ed25519 {fingerprint}" in done.stdout  # what the user compares with the server's
        assert "created DigitalOceanCredentials block 'dropship-digitalocean'" in done.stdout
        assert "created WebhookSecrets block 'dropship-webhook': secrets for GitHub" in done.stdout
        for secret in ("dop_v1_secret_token_value", "github-hook-secret-value", "PRIVATE KEY", host.private_key[40:80]):
            assert secret not in done.output
        check = dropship("check", "--provider", "digitalocean", cwd=project, env=env)
        assert check.returncode == 0, check.output
        lines = check.stdout.splitlines()
        assert any(line.startswith("ok      repository server block") and "pinned host key" in line for line in lines)
        assert any(
            line.startswith("ok      DigitalOcean credentials block 'dropship-digitalocean': token accepted")
            for line in lines
        )
        assert emulator.alive() == []  # check creates no droplet
        env["DO_TOKEN"] = "dop_v1_wrong"
        assert (
            dropship(
                "blocks", "--provider", "digitalocean", "--do-token-env", "DO_TOKEN", cwd=project, env=env
            ).returncode
            == 0
        )
        bad = dropship("check", "--provider", "digitalocean", cwd=project, env=env)
        assert bad.returncode == 1
        (line,) = [x for x in bad.stdout.splitlines() if "DigitalOcean" in x]
        assert line.startswith("failed  DigitalOcean credentials block") and line.endswith("--do-token-env VAR")
        assert "dop_v1_wrong" not in bad.output
    finally:
        api.stop()
        host.stop()


@pytest.mark.parametrize("command", ["init", "blocks", "check", "ui"])
def test_setup_commands_have_help(command: str) -> None:
    done = subprocess.run([DROPSHIP, command, "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and f"usage: dropship {command}" in done.stdout


def _converse(argv: list[str], cwd: Path, env: dict[str, str], answers: list[tuple[str, str]]) -> tuple[int, str]:
    """Run dropship on a terminal (a pty): wait for each prompt, type its answer; return (status, screen)."""
    import pty
    import select

    pid, main_fd = pty.fork()  # the child's controlling terminal is the pty: getpass reads /dev/tty
    if pid == 0:
        try:
            os.chdir(cwd)
            os.execve(DROPSHIP, [DROPSHIP, *argv], env)
        finally:
            os._exit(127)
    screen = ""
    answered = 0
    pending = list(answers)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main_fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(main_fd, 4096).decode(errors="replace")
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        if pending and pending[0][0] in screen[answered:]:
            prompt, answer = pending.pop(0)
            answered = screen.index(prompt, answered) + len(prompt)  # each prompt answered once
            os.write(main_fd, (answer + "\n").encode())
    os.close(main_fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), screen


def test_blocks_asks_on_a_terminal_and_hides_the_token(server: dict[str, Any], tmp_path: Path) -> None:
    project = make_project(tmp_path / "asked")
    env = env_for(server["api"], tmp_path / "home")
    assert dropship("init", "--arch", "amd64", "--format", "deb", cwd=project, env=env).returncode == 0
    # its own credentials block: another test of this module's server may have made the default one
    _edit(
        project / "dropship.toml",
        r'^provider = "local"',
        'provider = "digitalocean"\ncredentials = "asked-digitalocean"',
    )
    status, screen = _converse(
        ["blocks"],
        project,
        env,
        [
            ("armored secret key file (empty: generate a new key): ", ""),
            ("key user id name", "asked release key"),
            ("key user id email: ", "asked@example.invalid"),
            ("repository: a folder here, or user@host[:port]:/path on an SSH server: ", str(tmp_path / "repo")),
            ("DigitalOcean API token (hidden): ", "dop_v1_typed_secret"),
        ],
    )
    assert status == 0, screen
    assert "created SigningKey block 'asked-signing-key'" in screen
    assert f"created RepoServer block 'asked-repo': folder {tmp_path / 'repo'}" in screen
    assert "created DigitalOceanCredentials block 'asked-digitalocean'" in screen
    assert "dop_v1_typed_secret" not in screen  # getpass: not echoed, never printed
    assert "GetPassWarning" not in screen
