"""Credentials in URLs (`https://user:token@host/...`) never reach an error or a log line.

`DropshipError` redacts its message with `redact`; `redact_logs` makes every
log record of the process redacted the same way (the CLI and the flows call
it), so a source URL, an index URL or a database URL with a password is
logged as `scheme://user:***@host/...`.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable
from typing import Any

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):[^/\s@]*@")


def redact(text: str) -> str:
    """`text` with the password of every URL's user info masked (`https://user:***@host/...`)."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


def basic_token(username: str, password: str) -> str:
    """HTTP Basic credentials (`base64(user:password)`): what registries' auth files and headers carry."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def redact_secrets(text: str, username: str, password: str) -> str:
    """`text` without `password`, in clear or inside a Basic token (a tool's output may echo either)."""
    if not password:
        return text
    return text.replace(password, "***").replace(basic_token(username, password), "***")


class _RedactingFactory:
    """A log record factory around `previous` whose records carry redacted messages."""

    def __init__(self, previous: Callable[..., logging.LogRecord]) -> None:
        self.previous = previous

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: logging reports it when the record is emitted
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record


def redact_logs() -> None:
    """From now on, every log record of this process has its message redacted (idempotent)."""
    previous = logging.getLogRecordFactory()
    if not isinstance(previous, _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(previous))
