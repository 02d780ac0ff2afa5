"""The lines a person reads: events through real loggers, and the closing lines."""

from __future__ import annotations

import io
import logging

from dropship.progress import Reporter, closing_lines, event, tidy_reason


def test_only_marked_records_become_lines() -> None:
    logger = logging.getLogger("dropship.tests.progress")
    logger.setLevel(logging.INFO)
    stream = io.StringIO()
    reporter = Reporter(stream)
    logger.addHandler(reporter)
    try:
        logger.info("Finished in state Completed()")
        logger.info("%s", "tiny_1.0.0_amd64.deb", extra=event("build", name="amd64-deb", seconds=12.34))
        logger.error("cc failed", extra=event("build", "failed", name="arm64-deb"))
        logger.warning("dependency lib failed", extra=event("build", "skipped", name="app"))
    finally:
        logger.removeHandler(reporter)
    assert stream.getvalue().splitlines() == [
        "✓ build amd64-deb 12.3 s: tiny_1.0.0_amd64.deb",
        "✗ build arm64-deb: cc failed",
        "- build app: dependency lib failed",
    ]


def _summary(url: str, names: list[str]) -> dict[str, object]:
    return {
        "project": "tiny",
        "name": "v1.0.0",
        "release_class": "stable",
        "suites": ["stable"],
        "version": "1.0.0",
        "wall_seconds": 30.4,
        "machines_created": 1,
        "cost": 0.0,
        "url": url,
        "targets": [{"name": "t", "artifacts": [{"name": n} for n in names]}],
    }


def test_closing_lines_of_a_local_deb_only_release() -> None:
    lines = closing_lines(
        _summary("file:///srv/repo/current", ["tiny_1.0.0_amd64.deb"]),
        key_name="tiny-release",
        component="main",
        summary_path="/w/summary.json",
        provider="local",
    )
    assert lines[0] == "Published tiny v1.0.0 (stable, suites stable) in 30.4 s with 1 local machine."
    assert lines[1:3] == ["Repository: /srv/repo/current", "Summary:    /w/summary.json"]
    assert (
        "  echo 'deb [signed-by=/etc/apt/keyrings/tiny-tiny-release.gpg] file:/srv/repo/current stable main' "
        "| sudo tee /etc/apt/sources.list.d/tiny.list"
    ) in lines
    assert not any("dnf" in line for line in lines)


def test_closing_lines_of_a_served_repository_with_rpms() -> None:
    lines = closing_lines(
        _summary("https://repo.example.org/", ["tiny-1.0.0-1.x86_64.rpm"]),
        key_name="k",
        component="main",
        summary_path="s.json",
    )
    assert "  sudo curl -fsSL -o /etc/yum.repos.d/tiny-stable.repo https://repo.example.org/rpm/stable.repo" in lines
    assert "  sudo dnf install tiny-1.0.0" in lines and not any("apt" in line for line in lines)


def test_a_failed_targets_reason_loses_its_wrappers_not_its_cause() -> None:
    reason = (
        "target amd64-deb: build flow run x-amd64-deb ended Failed: Flow run encountered an exception: "
        "BuildFailed: target amd64-deb: build of amd64-deb failed with exit code 1: sh fail.sh\ncc: error: x.c"
    )
    assert tidy_reason("amd64-deb", reason) == (
        "build flow run x-amd64-deb ended Failed: build of amd64-deb failed with exit code 1: sh fail.sh\n"
        "    cc: error: x.c"
    )


def test_closing_lines_name_the_image_index_and_each_platform() -> None:
    summary = {
        "project": "hello",
        "version": "1.2.3",
        "suites": ["stable"],
        "url": "file:///srv/repo",
        "machines_created": 3,
        "targets": [{"name": "amd64-deb", "artifacts": [{"name": "hello_1.2.3_amd64.deb"}]}],
        "name": "v1.2.3",
        "release_class": "stable",
        "wall_seconds": 3.0,
        "image": {
            "repository": "127.0.0.1:5000/hello",
            "digest": "sha256:" + "a" * 64,
            "tags": ["1.2.3", "1.2", "latest"],
            "tagged": True,
            "platforms": {"linux/arm64": "sha256:" + "1" * 64, "linux/amd64": "sha256:" + "2" * 64},
        },
    }
    lines = closing_lines(summary, key_name="k", component="main", summary_path="s")
    at = lines.index("image (tags 1.2.3, 1.2, latest):")
    assert lines[at + 1 :] == [
        "  127.0.0.1:5000/hello@sha256:" + "a" * 64,
        "  linux/amd64: sha256:" + "2" * 64,
        "  linux/arm64: sha256:" + "1" * 64,
        "  docker pull 127.0.0.1:5000/hello:1.2.3",
    ]
    summary["image"]["tagged"] = False
    assert "image (tags no tag moved):" in closing_lines(summary, key_name="k", component="main", summary_path="s")
