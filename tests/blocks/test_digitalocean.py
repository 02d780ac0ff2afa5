"""The DigitalOcean block: where droplets reach Prefect, and what never leaves it."""

from __future__ import annotations

import pytest

from blocks.digitalocean import DigitalOceanCredentials
from dropship.errors import ConfigError


def test_a_loopback_worker_url_is_refused_for_digitalocean_and_its_emulator() -> None:
    real = DigitalOceanCredentials(token="t")
    with pytest.raises(ConfigError, match="set worker_api_url"):
        real.worker_url("http://127.0.0.1:4200/api")
    assert (
        real.model_copy(update={"worker_api_url": "http://10.10.0.2:4200/api"}).worker_url("http://127.0.0.1:4200/api")
        == "http://10.10.0.2:4200/api"
    )
    emulated = DigitalOceanCredentials(token="t", endpoint="http://127.0.0.1:8090")
    for loopback in ("http://127.0.0.1:4200/api", "http://localhost:4200/api", "http://[::1]:4200/api"):
        with pytest.raises(ConfigError, match="set worker_api_url"):  # an emulated droplet's loopback is its own
            emulated.worker_url(loopback)
    published = emulated.model_copy(update={"worker_api_url": "http://orchestrator.dropship.test:4200/api"})
    assert published.worker_url("http://127.0.0.1:4200/api") == "http://orchestrator.dropship.test:4200/api"


def test_a_loopback_package_index_is_refused() -> None:
    block = DigitalOceanCredentials(token="t", endpoint="http://127.0.0.1:8090")
    assert block.index_url() == "https://pypi.org/simple"
    with pytest.raises(ConfigError, match="set package_index"):
        block.model_copy(update={"package_index": "http://127.0.0.1:8080/simple/"}).index_url()


def test_settings_carry_vpcs_and_no_prefect_credentials() -> None:
    block = DigitalOceanCredentials(
        token="dop_v1_x", vpcs={"nyc1": "vpc-1"}, api_auth_string="admin:pw", api_key="pnu_k"
    )
    settings = block.settings()
    assert dict(settings.vpcs) == {"nyc1": "vpc-1"}
    assert "admin:pw" not in repr(settings) and "pnu_k" not in repr(settings) and "dop_v1_x" not in repr(settings)
    assert "admin:pw" not in repr(block)
