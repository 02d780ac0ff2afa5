"""The release index at the repository root: `index.json` for tools, `index.html` for people.

Like Garage's download page, it lists every release by class (stable,
extra, development) with its date, version, commit, targets, and each
artifact's size and sha256 as served (RPMs are re-signed when published, so
their hash is read from the tree, not from the build). The history travels
with the tree: each release's tree carries the index of every release before
it, so the page survives pruning; a release whose files retention has since
removed is marked as no longer downloadable.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dropship.errors import RepositoryError
from dropship.repos.files import sha256_file, write_atomic

CLASSES = ("stable", "extra", "development")
INDEX_JSON = "index.json"
INDEX_HTML = "index.html"


@dataclass
class IndexedArtifact:
    name: str
    target: str
    path: str
    """Relative to the repository root."""
    size: int
    sha256: str


@dataclass
class IndexedLanguagePackage:
    """A wheel, sdist, npm or crate file of the release: it goes to a registry, not into this tree."""

    name: str
    target: str
    kind: str
    registry: str
    """The [[registries]] entry it is published to after the repository; empty: collected only."""
    size: int
    sha256: str


@dataclass
class IndexedRelease:
    id: str
    name: str
    release_class: str
    version: str
    commit: str
    date: str
    suites: list[str]
    targets: list[str]
    artifacts: list[IndexedArtifact] = field(default_factory=list)
    promoted_from: str = ""
    language_packages: list[IndexedLanguagePackage] = field(default_factory=list)
    image: dict[str, Any] = field(default_factory=dict)
    """The release's container image, if it has one: repository, digest (the index), tags, platforms."""


@dataclass
class ReleaseIndex:
    project: str
    base_url: str
    key_name: str
    releases: list[IndexedRelease] = field(default_factory=list)


def load_index(tree: Path) -> list[IndexedRelease]:
    """The releases listed in `tree/index.json` (none if there is no index yet)."""
    path = tree / INDEX_JSON
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
        fields = set(IndexedRelease.__dataclass_fields__)
        return [
            IndexedRelease(
                **{
                    **{k: v for k, v in r.items() if k in fields},
                    "artifacts": [IndexedArtifact(**a) for a in r["artifacts"]],
                    "language_packages": [IndexedLanguagePackage(**p) for p in r.get("language_packages", [])],
                }
            )
            for r in data["releases"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise RepositoryError(f"{path}: unreadable release index: {exc}") from exc


def locate_artifacts(tree: Path, built: dict[str, list[str]], suites: list[str]) -> list[IndexedArtifact]:
    """Where each target's packages ended up in `tree`, with size and sha256 of the served file."""
    found: list[IndexedArtifact] = []
    for target, names in sorted(built.items()):
        for name in names:
            if name.endswith(".deb"):
                candidates = sorted((tree / "pool").rglob(name)) if (tree / "pool").exists() else []
            else:
                candidates = [p for s in suites for p in sorted((tree / "rpm" / s).glob(f"*/packages/{name}"))]
            if not candidates:
                raise RepositoryError(f"{name} of target {target} is not in the signed tree")
            for path in candidates:
                relative = path.relative_to(tree).as_posix()
                found.append(IndexedArtifact(name, target, relative, path.stat().st_size, sha256_file(path)))
    return found


def update_index(tree: Path, index: ReleaseIndex, release: IndexedRelease) -> ReleaseIndex:
    """Add `release` to the history carried in `tree` and rewrite index.json and index.html."""
    history = [r for r in load_index(tree) if r.id != release.id] + [release]
    history.sort(key=lambda r: r.id, reverse=True)
    index.releases = history
    payload = {
        "project": index.project,
        "base_url": index.base_url,
        "keys": {"armored": f"keys/{index.key_name}.asc", "keyring": f"keys/{index.key_name}.gpg"},
        "apt_sources": f"{index.project}.sources",
        "releases": [{**asdict(r), "available": all((tree / a.path).exists() for a in r.artifacts)} for r in history],
    }
    write_atomic(tree / INDEX_JSON, (json.dumps(payload, indent=2) + "\n").encode())
    write_atomic(tree / INDEX_HTML, render_html(tree, index).encode())
    return index


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


_CSS = """
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:20px 32px}header h1{margin:0;font-size:24px}
header p{margin:4px 0 0;color:#b8c0cc}main{padding:16px 32px;max-width:1200px}
h2{margin:28px 0 8px;font-size:19px;border-bottom:2px solid #d5dae1;padding-bottom:4px}
.use{background:#fff;border:1px solid #d5dae1;border-radius:6px;padding:12px 16px}
.use a{margin-right:16px}section.release{background:#fff;border:1px solid #d5dae1;border-radius:6px;
padding:10px 16px;margin:10px 0}section.release h3{margin:0 0 4px;font-size:17px}
.meta{color:#5a6475;font-size:13px}.badge{display:inline-block;font-size:12px;padding:1px 8px;border-radius:10px;
margin-left:8px;vertical-align:middle}.stable{background:#d9f2e1;color:#17603a}.extra{background:#fdf0d5;color:#7a5300}
.development{background:#e3e8f7;color:#2c3f80}.gone{background:#eee;color:#777}.note{color:#777}
table{border-collapse:collapse;width:100%;margin-top:8px;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-top:1px solid #edf0f3;vertical-align:top}
th{color:#5a6475;font-weight:600}td.num{text-align:right;white-space:nowrap}
code{font:12px ui-monospace,monospace;word-break:break-all}a{color:#2459c4;text-decoration:none}
a:hover{text-decoration:underline}p.none{color:#5a6475}
"""


def _image_rows(image: dict[str, Any]) -> list[str]:
    """The release's image: its reference by digest and tags, then one row per platform."""
    if not image:
        return []
    e = html.escape
    repository, tags = str(image.get("repository", "")), [str(t) for t in image.get("tags", [])]
    rows = [
        "<table><thead><tr><th>image</th><th>platform</th><th>digest</th></tr></thead><tbody>",
        f"<tr><td><code>{e(repository)}</code> ({e(', '.join(tags))})</td><td>index</td>"
        f"<td><code>{e(str(image.get('digest', '')))}</code></td></tr>",
    ]
    for platform, digest in sorted(dict(image.get("platforms", {})).items()):
        rows.append(f"<tr><td></td><td>{e(str(platform))}</td><td><code>{e(str(digest))}</code></td></tr>")
    return [*rows, "</tbody></table>"]


def render_html(tree: Path, index: ReleaseIndex) -> str:
    e = html.escape
    base = index.base_url.rstrip("/")
    suites = sorted({s for r in index.releases for s in r.suites})
    repo_files = [f"rpm/{s}.repo" for s in suites if (tree / "rpm" / f"{s}.repo").exists()]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(index.project)} releases</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{e(index.project)} releases</h1>",
        f"<p>Signed APT and RPM repositories at <code>{e(base)}/</code></p></header><main>",
        '<div class="use"><strong>Use this repository:</strong> ',
        f'<a href="{e(index.project)}.sources">APT sources ({e(index.project)}.sources)</a>',
        f'<a href="keys/{e(index.key_name)}.asc">signing key (.asc)</a>',
        f'<a href="keys/{e(index.key_name)}.gpg">APT keyring (.gpg)</a>',
        *[f'<a href="{e(p)}">{e(p)}</a>' for p in repo_files],
        '<a href="index.json">index.json</a></div>',
    ]
    for release_class in CLASSES:
        releases = [r for r in index.releases if r.release_class == release_class]
        parts.append(f'<h2 id="{release_class}">{release_class.capitalize()} releases</h2>')
        if not releases:
            parts.append('<p class="none">None yet.</p>')
        for r in releases:
            available = all((tree / a.path).exists() for a in r.artifacts)
            badge = f'<span class="badge {release_class}">{e(release_class)}</span>'
            if not available:
                badge += '<span class="badge gone">files pruned</span>'
            promoted = f" · promoted from {e(r.promoted_from)}" if r.promoted_from else ""
            if (tree / "docs" / r.version).is_dir():  # a docs job's output ([[jobs]] kind "docs")
                promoted += f' · <a href="docs/{e(r.version)}/">documentation</a>'
            parts += [
                f'<section class="release" id="{e(r.id)}"><h3>{e(r.name)}{badge}</h3>',
                f'<div class="meta">release <code>{e(r.id)}</code> · version {e(r.version)} · {e(r.date)} · commit <code>{e(r.commit[:12])}</code>'
                f" · suites {e(', '.join(r.suites))} · targets {e(', '.join(r.targets))}{promoted}</div>",
                "<table><thead><tr><th>target</th><th>package</th><th>size</th><th>sha256</th></tr></thead><tbody>",
            ]
            for a in r.artifacts:
                link = f'<a href="{e(a.path)}">{e(a.name)}</a>' if (tree / a.path).exists() else e(a.name)
                parts.append(
                    f'<tr><td>{e(a.target)}</td><td>{link}</td><td class="num">{_size(a.size)}</td>'
                    f"<td><code>{e(a.sha256)}</code></td></tr>"
                )
            for p in r.language_packages:
                where = f"to {e(p.registry)}" if p.registry else "collected, not published"
                parts.append(
                    f'<tr><td>{e(p.target)}</td><td>{e(p.name)} <span class="note">({e(p.kind)}, {where})</span>'
                    f'</td><td class="num">{_size(p.size)}</td><td><code>{e(p.sha256)}</code></td></tr>'
                )
            parts.append("</tbody></table>")
            parts += _image_rows(r.image)
            parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"
