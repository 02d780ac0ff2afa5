"""Credentials in URLs (`https://user:token@host/...`) never reach an error or a log line.

`DropshipError` redacts its message with `redact`; `redact_logs` makes every
log record of the process redacted the same way (the CLI and the flows call
it), so a source URL, an index URL or a database URL with a password is
logged as `scheme://user:***@host/...`. That includes a record's traceback:
the text of a logged exception and of those chained to it (their args are
not `DropshipError`'s when a library raised them), and an uncaught one's.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
import traceback
from collections.abc import Callable
from types import TracebackType
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
        if record.exc_info and record.exc_info[1] is not None:
            text = _FORMATTER.formatException(record.exc_info)
            clean = redact(text)
            if clean != text:
                # Formatters print `exc_text` when it is set; without `exc_info` no handler
                # (Prefect's JSON formatter, a rich traceback) reads the exception itself again.
                record.exc_text, record.exc_info = clean, None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return record


_FORMATTER = logging.Formatter()


class _RedactingExceptHook:
    """`sys.excepthook` printing an uncaught exception's traceback redacted."""

    def __call__(self, kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb))))


def redact_logs() -> None:
    """From now on, every log record of this process has its message and traceback redacted,
    and so has the traceback of an uncaught exception (idempotent)."""
    previous = logging.getLogRecordFactory()
    if not isinstance(previous, _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(previous))
    if sys.excepthook is sys.__excepthook__:  # not another tool's hook (a debugger's, pytest's)
        sys.excepthook = _RedactingExceptHook()
