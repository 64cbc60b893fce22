"""Pre-flight check of a Ray cluster address, so a wrong ``RAY_ADDRESS`` fails in seconds instead of hanging.

``ray.init(address="host:port")`` waits for the cluster's GCS for minutes before it gives up. A TCP connection
to the same address answers at once: refused, unresolvable or silent (a short timeout). ``auto`` and an
empty address (a local Ray) are left to Ray.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from resnet_core import ResnetCoreError

CONNECT_TIMEOUT_S = 5.0
"""How long a silent address may take before the study gives up on it."""

DEFAULT_PORTS = {"": 6379, "ray": 10001, "http": 8265, "https": 8265}
"""Ray's default ports: the GCS, the Ray client server, the dashboard / job API."""


def host_and_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``host:port``, ``ray://host:port`` or ``http://host:port``; None for ``auto`` / empty."""
    address = address.strip()
    if not address or address == "auto" or address.startswith("local"):
        return None
    parts = urlsplit(address if "://" in address else f"//{address}")
    if not parts.hostname:
        raise ResnetCoreError(f"the Ray address {address!r} names no host: use HOST:PORT (e.g. 127.0.0.1:6379), "
                              "ray://HOST:10001, or unset RAY_ADDRESS to run on a local Ray")
    try:
        port = parts.port
    except ValueError:
        raise ResnetCoreError(f"the Ray address {address!r} has an invalid port: use HOST:PORT, e.g. "
                              "127.0.0.1:6379") from None
    return parts.hostname, port if port is not None else DEFAULT_PORTS.get(parts.scheme, 6379)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise a one-line :class:`ResnetCoreError` unless something accepts TCP connections at ``address``."""
    target = host_and_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            return
    except socket.gaierror:
        reason = "unknown host"
    except TimeoutError:
        reason = f"no answer within {timeout:g} s"
    except OSError as error:
        reason = (error.strerror or type(error).__name__).lower()
    raise ResnetCoreError(f"cannot reach the Ray cluster at {address!r} ({reason}): check RAY_ADDRESS, or unset it "
                          "to run on a local Ray")
