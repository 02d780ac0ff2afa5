"""The webhook receiver's secrets."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from dropship.webhook import Secrets


class WebhookSecrets(Block):
    """Shared secrets of the forge webhooks; a forge without one is refused (401)."""

    _block_type_name = "dropship webhook secrets"
    _block_type_slug = "dropship-webhook-secrets"
    _description = "GitLab secret token and GitHub webhook secret for `dropship webhook`."

    gitlab_token: SecretStr | None = Field(
        default=None, description="The Secret token of the GitLab webhook (sent as X-Gitlab-Token)."
    )
    github_secret: SecretStr | None = Field(
        default=None, description="The Secret of the GitHub webhook (HMAC key of X-Hub-Signature-256)."
    )

    def secrets(self) -> Secrets:
        return Secrets(
            gitlab_token=self.gitlab_token.get_secret_value() if self.gitlab_token else None,
            github_secret=self.github_secret.get_secret_value() if self.github_secret else None,
        )
