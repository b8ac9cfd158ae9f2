"""Every end-to-end test has each answer from ingest and status checked against the service's
OpenAPI document (tests/support/contract.py); a mismatch fails the test."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from tests.support.contract import ContractCheck

CHECK = ContractCheck()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    if call.when == "call":
        item.stash[CALL_FAILED] = outcome.get_result().failed


CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def answers_as_documented(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ContractCheck]:
    CHECK.mismatches.clear()
    CHECK.documents.clear()  # read again per test: a later stack may get an earlier one's port
    CHECK.install(monkeypatch)
    yield CHECK
    if not request.node.stash.get(CALL_FAILED, False):  # a failed test has said it already
        assert not CHECK.mismatches, "answers not as the OpenAPI document says:\n" + "\n".join(CHECK.mismatches)
