"""dropship's Prefect blocks, registered through the `prefect.collections` entry point.

prefect block register -m blocks
"""

from blocks.digitalocean import DigitalOceanCredentials
from blocks.registry import RegistryCredentials
from blocks.repo_server import RepoServer
from blocks.signing_key import SigningKey
from blocks.webhook import WebhookSecrets

__all__ = ["DigitalOceanCredentials", "RegistryCredentials", "RepoServer", "SigningKey", "WebhookSecrets"]
