"""API_KEYS parsing and matching (shared/auth.py): tenants, keys with ':', keyless entries as
tenants of their own under the legacy hash, every malformed form named by position and never
echoing a key, and a match found whichever key it is."""

from __future__ import annotations

import pytest

from shared.auth import BadApiKeys, owner_of, parse_api_keys


def test_keys_of_one_tenant_share_it_and_keyless_entries_are_tenants_of_their_own() -> None:
    keys = parse_api_keys("k1:team-a, k2:team-a,k3:team-b,legacy-key")
    assert [keys.tenant_for(k) for k in ("k1", "k2", "k3")] == ["team-a", "team-a", "team-b"]
    assert keys.tenant_for("legacy-key") == owner_of("legacy-key")  # what its jobs recorded before tenants
    assert keys.owners_of("team-a") == {"team-a", owner_of("k1"), owner_of("k2")}
    assert keys.owners_of(owner_of("legacy-key")) == {owner_of("legacy-key")}
    assert keys.tenant_of_owner(owner_of("k2")) == "team-a" and keys.tenant_of_owner("team-b") == "team-b"


def test_an_entry_is_split_on_its_last_colon() -> None:
    keys = parse_api_keys("sk:live:abc:team-a,urn:x::team-b")
    assert keys.tenant_for("sk:live:abc") == "team-a"
    assert keys.tenant_for("urn:x:") == "team-b"
    assert keys.tenant_for("sk") is None and keys.tenant_for("sk:live:abc:team-a") is None


def test_unknown_empty_and_near_miss_tokens_match_nothing() -> None:
    keys = parse_api_keys("alpha-key:a,beta-key:b")
    for token in ("", " ", "alpha", "alpha-key2", "ALPHA-KEY", "beta-key:b", "alpha-key:a"):
        assert keys.tenant_for(token) is None, token
    assert keys.tenant_for(" beta-key ") == "b"  # surrounding blanks of a header value are not the key


def test_every_key_is_found_wherever_it_is_listed() -> None:
    """The comparison runs over every key (no early exit): the first, a middle and the last
    one all match, and a key listed after a near-identical one is not mistaken for it."""
    listed = [f"key-{i:03d}:tenant-{i % 7}" for i in range(50)] + ["key-0001:late"]
    keys = parse_api_keys(",".join(listed))
    for i in (0, 1, 25, 49):
        assert keys.tenant_for(f"key-{i:03d}") == f"tenant-{i % 7}"
    assert keys.tenant_for("key-0001") == "late"


def test_empty_setting_means_authentication_off() -> None:
    for raw in ("", "   "):
        keys = parse_api_keys(raw)
        assert not keys.on and keys.tenant_for("anything") is None


@pytest.mark.parametrize(("raw", "message"), [
    ("s3cret-one:a,:b", "API_KEYS entry 2: empty key"),
    ("s3cret-one:", "API_KEYS entry 1: empty tenant after ':'"),
    ("s3cret-one:a,s3cret-two: ", "API_KEYS entry 2: empty tenant after ':'"),
    ("s3cret-one:a,s3cret-two:b,s3cret-one:c", "API_KEYS entry 3: the same key as entry 1"),
    ("s3cret-one,s3cret-one", "API_KEYS entry 2: the same key as entry 1"),
    ("s3cret-one:a,,s3cret-two:b", "API_KEYS entry 2: empty (two commas in a row, or one at an end)"),
    ("s3cret-one:a,", "API_KEYS entry 2: empty (two commas in a row, or one at an end)"),
])
def test_a_malformed_setting_names_the_entry_and_the_problem_never_the_key(raw: str, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_api_keys(raw)
    assert isinstance(refused.value, BadApiKeys) and str(refused.value) == message
    assert "s3cret" not in str(refused.value)
