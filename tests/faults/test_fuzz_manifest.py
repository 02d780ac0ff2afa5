"""Fuzzed manifests (mutations of the example): each is valid or a one-line ManifestError, never another
exception; a valid one is usable by what runs later on a machine (its commands and environment can be
executed, its dates computed, its globs and patterns used).

`DROPSHIP_FUZZ_EXAMPLES` raises the example count (default 200 per test); `pytest -s` prints the counts.
"""

from __future__ import annotations

import copy
import glob
import os
import subprocess
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropship.errors import ConfigError, ManifestError
from dropship.manifest import Manifest, load_manifest, parse_manifest
from dropship.patterns import compile_pattern
from dropship.tags import classify
from tests.faults.strategies import Tally

EXAMPLES = int(os.environ.get("DROPSHIP_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello" / "dropship.toml"
RAW = EXAMPLE.read_bytes()
DATA = tomllib.loads(RAW.decode())
# Everything the example does not set, so mutations reach every field.
DATA.setdefault(
    "classes",
    {
        "stable": {"suites": ["stable"]},
        "extra": {"suites": ["testing"], "pattern": r"v.*"},
        "development": {"suites": ["nightly"]},
    },
)
DATA["repository"].setdefault("valid_days", 7)
DATA["machines"].setdefault("build_timeout", 1800)
DATA["machines"].setdefault("credentials", "dropship-digitalocean")
DATA["targets"][0].update(env={"CC": "gcc"}, depends_on=[], size="s-1vcpu-1gb")

SPECIAL_TEXT = [
    "",
    ".",
    "/",
    "..",
    "../x",
    "a=b",
    "A=B",
    "x\x00y",
    "a\nb",
    " x",
    "make && make install",
    "(a+)+b",
    "*",
    "out/",
    "٣",
    "DROPSHIP_VERSION",
    "PREFECT_API_URL",
    "\ud7ff",
    "x" * 5000,
    "-rf",
    "v\\d+",
]
SPECIAL_INT = [0, -1, 1, 9, 10, 86400, 86401, 3650, 3651, 999999999, 2**63, 10**30, True, False]
scalars = st.one_of(
    st.sampled_from(SPECIAL_TEXT),
    st.text(max_size=40),
    st.sampled_from(SPECIAL_INT),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.datetimes(),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


PATHS = _paths(DATA)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(DATA)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = data
        try:
            for part in path[:-1]:
                parent = parent[part]
            last = path[-1]
            parent[last]  # the path may be gone after an earlier mutation
        except (KeyError, IndexError, TypeError):
            continue
        match draw(st.sampled_from(["replace", "delete", "add-key", "append"])):
            case "replace":
                parent[last] = draw(values)
            case "delete":
                del parent[last]
            case "add-key" if isinstance(parent[last], dict):
                parent[last][draw(st.text(max_size=12))] = draw(values)
            case "append" if isinstance(parent[last], list):
                parent[last].append(draw(values))
            case _:
                parent[last] = draw(values)
    return data


def usable(manifest: Manifest, scratch: Path) -> None:
    """What a machine would do with the manifest later, done now: it must not fail."""
    now = datetime.now(UTC)
    if manifest.repository.valid_days:
        now + timedelta(days=manifest.repository.valid_days)
    assert manifest.repository.keep_versions >= 1 and type(manifest.repository.keep_versions) is int
    assert "\n" not in manifest.repository.origin + (manifest.repository.label or "")
    commands = [t.build for t in manifest.targets] + ([manifest.project.test] if manifest.project.test else [])
    for target in manifest.targets:
        # execve accepts the arguments and the environment (Python raises ValueError on NUL or '=' names)
        subprocess.run(["/bin/true", *target.build], env=dict(target.env), check=True)
        for pattern in target.artifacts:
            glob.glob(pattern, root_dir=scratch)
            assert pattern.strip("./"), pattern
        for pattern in target.rebuild_patterns:
            compile_pattern(pattern).search("src/main.c")
    for command in commands:
        assert " " not in command[0] and "&" not in command[0]
    assert manifest.machines.build_timeout <= 86400
    classify(manifest, tag="v1.2.3")
    for tag in ("v1.2.3-rc1", "v1.2.3-" + "a" * 90):
        try:
            classify(manifest, tag=tag)
        except ConfigError:
            pass


def test_mutated_manifests_are_valid_or_a_manifest_error(tmp_path: Path) -> None:
    tally = Tally()

    @FUZZ
    @given(mutated())
    def check(data: dict[str, Any]) -> None:
        try:
            manifest = parse_manifest(data, "fuzz/dropship.toml")
        except ManifestError as exc:
            tally.counts["refused"] += 1
            assert "\n" not in str(exc) and str(exc).startswith("fuzz/dropship.toml"), str(exc)
            return
        except Exception as exc:  # noqa: BLE001 - what the fuzz is looking for
            tally.crash(f"{type(exc).__name__}: {exc}")
            return
        tally.counts["accepted"] += 1
        usable(manifest, tmp_path)

    check()
    tally.report("fuzz manifests (field mutations)", refused="refused at load")


def test_mutated_manifest_files_are_valid_or_a_manifest_error(tmp_path: Path) -> None:
    tally = Tally()
    file = tmp_path / "dropship.toml"

    @FUZZ
    @given(
        st.lists(
            st.tuples(st.integers(0, len(RAW)), st.binary(min_size=0, max_size=4), st.integers(0, 3)),
            min_size=1,
            max_size=4,
        )
    )
    def check(edits: list[tuple[int, bytes, int]]) -> None:
        raw = RAW
        for at, insert, remove in edits:
            raw = raw[:at] + insert + raw[at + remove :]
        file.write_bytes(raw)
        try:
            manifest = load_manifest(file)
        except ManifestError as exc:
            tally.counts["refused"] += 1
            assert "\n" not in str(exc), str(exc)
            return
        except Exception as exc:  # noqa: BLE001
            tally.crash(f"{raw!r}: {type(exc).__name__}: {exc}")
            return
        tally.counts["accepted"] += 1
        usable(manifest, tmp_path)

    check()
    tally.report("fuzz manifests (byte edits)", refused="refused at load", both_sides=False)
