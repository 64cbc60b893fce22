"""A wrong Ray address fails in seconds with one line, where ray.init would wait minutes for the cluster."""

from __future__ import annotations

import socket
import time

import pytest

from resnet_core import ResnetCoreError
from study.ray_address import check_reachable, host_and_port


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:6379", ("127.0.0.1", 6379)),
        ("head.example:7000", ("head.example", 7000)),
        ("ray://10.0.0.5:10001", ("10.0.0.5", 10001)),
        ("ray://10.0.0.5", ("10.0.0.5", 10001)),
        ("http://127.0.0.1:8265", ("127.0.0.1", 8265)),
        ("head", ("head", 6379)),
        ("auto", None),
        ("", None),
    ],
)
def test_addresses_name_a_host_and_port(address: str, expected: tuple[str, int] | None) -> None:
    assert host_and_port(address) == expected


def test_a_bad_port_is_one_line() -> None:
    with pytest.raises(ResnetCoreError, match="invalid port") as error:
        host_and_port("127.0.0.1:http")
    assert "\n" not in str(error.value)


def test_nothing_listening_fails_at_once_naming_the_address() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        started = time.perf_counter()
        with pytest.raises(ResnetCoreError) as error:
            check_reachable(f"127.0.0.1:{port}")
    assert time.perf_counter() - started < 5
    message = str(error.value)
    assert f"127.0.0.1:{port}" in message and "refused" in message and "RAY_ADDRESS" in message
    assert "\n" not in message


def test_a_listening_address_passes() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}")
