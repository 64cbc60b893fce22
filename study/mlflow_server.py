"""The study's side of an MLflow tracking server: a pre-flight check, and patience when it goes away.

A study that logs to a server (``mlflow.tracking_uri: http(s)://host:port``) authenticates the way every
MLflow client does, with ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (basic auth) or
``MLFLOW_TRACKING_TOKEN`` from the environment; nothing secret belongs in the spec, which is logged.

* :func:`check_server` asks the server once, with a short timeout and no retries, before Ray starts: an
  unreachable server, missing or wrong credentials are one line each instead of MLflow's minutes of
  retries and a traceback.
* :func:`call_patiently` retries an idempotent tracking call while the server is away (restarting, say)
  for a bounded time, with one warning, and raises :class:`TrackingUnavailable` when it stays away.
  :func:`use_short_client_retries` turns MLflow's own retries off in the driver, so the study, which
  knows which calls are safe to repeat, decides (urllib3 would otherwise re-send a ``create_run`` whose
  answer was lost, and a lost answer is what a server restart produces).
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import TypeVar

from resnet_core import ResnetCoreError

T = TypeVar("T")

PREFLIGHT_TIMEOUT_S = 10.0
"""How long the pre-flight request may take before the server counts as unreachable (a refused connection
fails at once; this bounds a host that drops packets, or a server too busy to answer)."""

PATIENCE_S = 120.0
"""How long the driver keeps retrying a tracking call, or keeps trial results, while the server is away."""

CLIENT_TIMEOUT_S = 30
"""MLflow's per-request socket timeout in the driver (its default, 120 s, would stall the study that long)."""

TRANSIENT_HTTP = frozenset({429, 502, 503, 504})
"""Answers that mean "busy or restarting, ask again"."""

_CHECK_PATH = "/api/2.0/mlflow/experiments/search?max_results=1"


class TrackingUnavailable(ResnetCoreError):
    """The MLflow server stayed unreachable for longer than the driver's patience."""

    def __init__(self, message: str, reason: str = "unreachable") -> None:
        super().__init__(message)
        self.reason = reason


def is_server(uri: str) -> bool:
    """Whether ``uri`` names a tracking server (as opposed to a local store such as ``sqlite:///``)."""
    return uri.lower().startswith(("http://", "https://"))


def address(uri: str) -> str:
    """``uri`` as it may be printed: scheme, host, port and path, never a user name or password in it."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"


def _credentials(uri: str) -> tuple[str | None, str | None]:
    """The Authorization header MLflow's client would send to ``uri``, and the user it names (for messages):
    MLflow's own resolution -- MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, else ``~/.mlflow/credentials``,
    else MLFLOW_TRACKING_TOKEN."""
    from mlflow.utils.credentials import get_default_host_creds

    creds = get_default_host_creds(uri)
    if creds.username and creds.password:
        token = base64.standard_b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        return f"Basic {token}", creds.username
    if creds.token:
        return f"Bearer {creds.token}", None
    return None, None


def _tls_context(uri: str) -> ssl.SSLContext | None:
    """TLS as MLflow's client does it for ``uri``: MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_SERVER_CERT_PATH."""
    from mlflow.utils.credentials import get_default_host_creds

    creds = get_default_host_creds(uri)
    if creds.ignore_tls_verification:
        context = ssl.create_default_context()  # the user asked for no verification, as MLflow's client allows
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=creds.server_cert_path) if creds.server_cert_path else None


def _unreachable_reason(error: BaseException, timeout: float) -> str:
    reason = getattr(error, "reason", error)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error: {reason.reason or reason}"
    text = str(reason).strip().splitlines()
    return text[0] if text and text[0] else type(reason).__name__


def check_server(uri: str, timeout: float = PREFLIGHT_TIMEOUT_S) -> None:
    """One direct request to the tracking server, no retries: raise a one-line :class:`ResnetCoreError` if it
    cannot be reached within ``timeout`` seconds, refuses the credentials (401) or the user (403)."""
    where = address(uri)
    parts = urllib.parse.urlsplit(uri)
    if parts.password:
        raise ResnetCoreError("mlflow.tracking_uri holds a password, which would be logged with the spec: remove it "
                              "and set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead")
    if not parts.hostname:
        raise ResnetCoreError(f"mlflow.tracking_uri={where!r} names no host: use http(s)://HOST:PORT")
    header, user = _credentials(uri)
    request = urllib.request.Request(where + _CHECK_PATH, headers={"Authorization": header} if header else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=_tls_context(uri)):
            return
    except urllib.error.HTTPError as error:
        status = f"{error.code} {error.reason}"
        if error.code == 401 and header is None:
            raise ResnetCoreError(f"the MLflow server at {where} requires authentication ({status}): set "
                                  "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials)"
                                  ) from None
        if error.code == 401:
            who = f"user {user!r}" if user else "the token in MLFLOW_TRACKING_TOKEN"
            raise ResnetCoreError(f"authentication failed at the MLflow server at {where} ({status}) for {who}: "
                                  "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD") from None
        if error.code == 403:
            who = f"user {user!r}" if user else "this client"
            raise ResnetCoreError(f"the MLflow server at {where} denies {who} access ({status}): use an account "
                                  "with access in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD") from None
        raise ResnetCoreError(f"the MLflow server at {where} answered {status} to {_CHECK_PATH.split('?')[0]}: "
                              "is mlflow.tracking_uri an MLflow tracking server?") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise ResnetCoreError(f"cannot reach the MLflow server at {where} ({_unreachable_reason(error, timeout)}): "
                              "start it, or set mlflow.tracking_uri") from None


def use_short_client_retries() -> None:
    """MLflow's HTTP client in this process: no retries of its own (the study retries what is safe to repeat)
    and a 30 s socket timeout; values the user set in the environment win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(CLIENT_TIMEOUT_S))


def transient_reason(error: BaseException) -> str | None:
    """Why ``error`` means "the server is away, ask again later" (connection refused or lost, a timeout, a
    busy or restarting server), or None when it is a real answer that repeating would not change."""
    import requests
    from mlflow.exceptions import MlflowException

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, requests.exceptions.Timeout):
            return "timed out"
        if isinstance(current, requests.exceptions.RetryError):
            return "server busy"
        if isinstance(current, (requests.exceptions.ConnectionError, ConnectionError)):
            return "connection refused" if "refused" in str(current).lower() else "connection lost"
        if isinstance(current, requests.exceptions.HTTPError) and current.response is not None:
            if current.response.status_code in TRANSIENT_HTTP:
                return f"HTTP {current.response.status_code}"
        if isinstance(current, MlflowException) and current.get_http_status_code() in TRANSIENT_HTTP:
            return f"HTTP {current.get_http_status_code()}"
        current = current.__cause__ or current.__context__
    return None


def call_patiently(call: Callable[[], T], where: str, patience: float, what: str,
                   log: logging.Logger | None = None) -> T:
    """``call()``, repeated while the server at ``where`` is away, for up to ``patience`` seconds.

    ``call`` must be safe to repeat (find before create; metrics with fixed timestamps, which the server
    stores once). One warning when the server goes away, one line when it is back; after ``patience``
    seconds (at once when it is 0) :class:`TrackingUnavailable`. Other errors propagate unchanged.
    """
    started = time.monotonic()
    delay = 1.0
    warned = False
    while True:
        try:
            result = call()
        except Exception as error:
            reason = transient_reason(error)
            if reason is None:
                raise
            waited = time.monotonic() - started
            if waited + delay > patience:
                retried = f" after {waited:.0f} s of retries" if patience else ""
                raise TrackingUnavailable(f"the MLflow server at {where} is unreachable ({reason}){retried}",
                                          reason) from error
            if not warned and log is not None:
                log.warning("MLflow server at %s is unreachable (%s) while %s: retrying for up to %.0f s", where,
                            reason, what, patience)
            warned = True
            time.sleep(delay)
            delay = min(2 * delay, 10.0)
        else:
            if warned and log is not None:
                log.warning("MLflow server at %s is back after %.0f s", where, time.monotonic() - started)
            return result

