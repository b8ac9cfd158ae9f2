"""A scratch status view per module, for the tests of the production fold (tests/support/fold.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fold import ScratchView
from tests.support.stack import Infra


@pytest.fixture(scope="module")
def scratch(infra: Infra) -> Iterator[ScratchView]:
    view = ScratchView(infra.pg.url)
    try:
        yield view
    finally:
        view.drop()
