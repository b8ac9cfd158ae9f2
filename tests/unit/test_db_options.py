"""The pool's connection options (shared/db.py::with_custom_plans): plan_cache_mode is added to
what the operator gave, never instead of it."""

from __future__ import annotations

import pytest

from shared.db import with_custom_plans


def test_plan_cache_mode_alone_when_nothing_else_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGOPTIONS", raising=False)
    assert with_custom_plans("postgresql://imagejobs@127.0.0.1/imagejobs") == "-c plan_cache_mode=force_custom_plan"


def test_the_urls_options_are_kept_and_pgoptions_stands_in_when_the_url_has_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGOPTIONS", "-c search_path=app")
    assert with_custom_plans("postgresql://u@h/d?options=-c%20statement_timeout%3D5000") == (
        "-c statement_timeout=5000 -c plan_cache_mode=force_custom_plan")
    assert with_custom_plans("postgresql://u@h/d") == "-c search_path=app -c plan_cache_mode=force_custom_plan"
