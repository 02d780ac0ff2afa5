"""One way to call the Prefect API that rides out a server's bad minute.

Prefect's client already retries 429/502/503(/504 with
`PREFECT_CLIENT_RETRY_EXTRA_CODES`, see `dropship.orchestrator.CLIENT_RETRY_ENV`)
on one request, but a *new* client does not retry a refused connection (it
fails fast until it has connected once), and its retries run out. `call`
adds the outer layer for dropship's own calls and polling loops: on a
transient error it backs off and tries again with a fresh client until
`patience` seconds have passed, then raises `ApiUnavailable`, whose message
says the server, not the target, failed. Anything else (404, 409, 422, a
bug) is raised at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.exceptions import PrefectHTTPStatusError

from dropship.errors import ApiUnavailable
from dropship.orchestrator import RETRYABLE_STATUS

T = TypeVar("T")

PATIENCE = 300.0
"""Seconds of consecutive transient errors before a call gives up."""

_TRANSPORT_ERRORS = (httpx.TransportError,)


def transient(exc: BaseException) -> bool:
    """A failure of the API server or the path to it, not of the request."""
    if isinstance(exc, PrefectHTTPStatusError):
        return exc.response.status_code in RETRYABLE_STATUS
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in RETRYABLE_STATUS
    return isinstance(exc, _TRANSPORT_ERRORS)


def describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"{exc.response.status_code} from {exc.request.method} {exc.request.url.path}"
    return f"{type(exc).__name__}: {exc}".split("\n")[0][:200]


def call(
    fn: Callable[[SyncPrefectClient], T],
    what: str,
    *,
    patience: float = PATIENCE,
    first_delay: float = 1.0,
    max_delay: float = 20.0,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """`fn(client)` with a fresh sync client, retried on transient errors.

    `what` names the call in the error ("reading build run 1234"). Use it for
    one logical step (read, create, set state); a polling loop calls it once
    per poll, so an outage in the middle of a wait costs only time.
    """
    deadline = time.monotonic() + patience
    delay = first_delay
    while True:
        try:
            with get_client(sync_client=True) as client:
                return fn(client)
        except Exception as exc:
            if not transient(exc):
                raise
            now = time.monotonic()
            if now >= deadline:
                raise ApiUnavailable(
                    f"the Prefect API kept failing for {patience:.0f} s while {what} ({describe(exc)}): "
                    "check the orchestrator's Prefect server (`dropship server start` logs)"
                ) from exc
            pause = min(delay, max_delay, deadline - now) * (1 + random.uniform(-0.2, 0.2))
            if on_retry is not None:
                on_retry(exc, pause)
            time.sleep(max(pause, 0.05))
            delay *= 2
