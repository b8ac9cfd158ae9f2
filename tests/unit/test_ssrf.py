"""Which addresses the processor and the webhook sender may connect to (shared/ssrf.py)."""

from __future__ import annotations

import pytest

from shared.ssrf import AddressNotAllowed, address_allowed, check_url_host

LOOPBACK_OR_PRIVATE = [
    "127.0.0.1", "127.1.2.3", "::1", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "169.254.169.254", "fe80::1", "fe80::1%eth0", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
]
NEVER = ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "240.0.0.1", "255.255.255.255", "::ffff:0.0.0.0",
         "::ffff:224.0.0.1"]
PUBLIC = ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "93.184.216.34"]


@pytest.mark.parametrize("address", LOOPBACK_OR_PRIVATE + NEVER + ["100.64.0.1"])
def test_refused_without_allow_private(address: str) -> None:
    assert address_allowed(address, allow_private=False) is False


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_allowed(address: str) -> None:
    assert address_allowed(address, allow_private=False) is True
    assert address_allowed(address, allow_private=True) is True


@pytest.mark.parametrize("address", LOOPBACK_OR_PRIVATE)
def test_allow_private_admits_loopback_and_private(address: str) -> None:
    assert address_allowed(address, allow_private=True) is True


@pytest.mark.parametrize("address", NEVER)
def test_allow_private_still_refuses_unspecified_multicast_reserved(address: str) -> None:
    assert address_allowed(address, allow_private=True) is False


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "10.1.2.3", "[::ffff:127.0.0.1]", "169.254.169.254"])
def test_check_url_host_refuses_private_literals(host: str) -> None:
    with pytest.raises(AddressNotAllowed, match="address not allowed"):
        check_url_host(host, allow_private=False)


@pytest.mark.parametrize("host", ["example.com", "localhost", "img.internal", "8.8.8.8", "[2606:4700:4700::1111]"])
def test_check_url_host_passes_names_and_public_literals(host: str) -> None:
    assert check_url_host(host, allow_private=False) is None


def test_check_url_host_with_allow_private() -> None:
    assert check_url_host("127.0.0.1", allow_private=True) is None
    with pytest.raises(AddressNotAllowed):
        check_url_host("0.0.0.0", allow_private=True)
