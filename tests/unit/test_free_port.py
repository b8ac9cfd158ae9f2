"""Ports chosen for test servers: free, never handed out twice, and outside the range the
kernel gives outgoing connections (which could take one before its server binds it)."""

from __future__ import annotations

import socket

import pytest

from deploy.devstack import net


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = [net.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    low = net._ephemeral_low()  # noqa: SLF001
    assert all(net.LOWEST_CHOSEN_PORT <= p < low for p in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))


def test_a_port_in_use_is_skipped() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", net.free_port()))
        listener.listen()
        taken = listener.getsockname()[1]
        net._cursor = taken - net.LOWEST_CHOSEN_PORT  # noqa: SLF001 - the next try is the taken port
        assert net.free_port() != taken


def test_without_room_below_the_range_the_kernel_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(net, "_ephemeral_low", lambda: net.LOWEST_CHOSEN_PORT + 10)
    port = net.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
