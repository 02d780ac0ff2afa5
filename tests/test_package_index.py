"""The demo's local package index: a real pypiserver that twine uploads to with
the password kept in its folder, and the manifest edit that points the
example's wheel at it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dropship.demo import DEMO_INDEX, example_source, publish_wheels_to
from dropship.errors import ConfigError, RegistryError
from dropship.manifest import load_manifest
from dropship.package_index import USER, LocalPackageIndex
from dropship.registries import PypiIndex, language_files


def _wheel(tmp_path: Path) -> Path:
    """The example's wheel, collected where the release would put it."""
    out = tmp_path / "src" / "artifacts" / "python-wheel"
    subprocess.run(
        [sys.executable, str(example_source() / "python" / "build_wheel.py"), str(out)],
        check=True,
        env={"DROPSHIP_VERSION": "0.3.0", "SOURCE_DATE_EPOCH": "1700000000", "PATH": "/usr/bin:/bin"},
        cwd=example_source(),
    )
    return out.parent


def test_the_demo_index_takes_the_example_wheel_with_its_own_password(tmp_path: Path) -> None:
    index = LocalPackageIndex(tmp_path / "index")
    manifest_file = tmp_path / "dropship.toml"
    manifest_file.write_text(publish_wheels_to(index.url)((example_source() / "dropship.toml").read_text()))
    manifest = load_manifest(manifest_file)
    (registry,) = manifest.registries
    assert registry.name == DEMO_INDEX and registry.url == index.url
    files = language_files(manifest, ["python-wheel"], _wheel(tmp_path))
    assert [f.registry for f in files] == [DEMO_INDEX]
    assert index.password_file.exists() is False
    index.start()
    try:
        assert oct(index.password_file.stat().st_mode & 0o777) == "0o600"
        password = index.password_file.read_text().strip()
        with pytest.raises(RegistryError, match="twine upload exited"):
            PypiIndex(registry, USER, "wrong", twine=[sys.executable, "-m", "twine"]).upload([files[0].path])
        uploaded = PypiIndex(registry, USER, password, twine=[sys.executable, "-m", "twine"])
        uploaded.upload([files[0].path])
        assert uploaded.served("hello-dropship") == {files[0].path.name: files[0].sha256}
        assert (index.packages / files[0].path.name).exists()
    finally:
        index.stop()
    # a second index in the same folder: the same port (the manifest's URL) and password
    again = LocalPackageIndex(tmp_path / "index")
    assert again.url == index.url and again.password_file.read_text().strip() == password


def test_the_edit_refuses_a_manifest_without_a_wheel() -> None:
    with pytest.raises(ConfigError, match="no wheel `packages` line"):
        publish_wheels_to("http://127.0.0.1:1/")('[project]\nname = "x"\n')
