from tools.schema_doc import SCHEMA_PATH, render


def test_published_event_schema_matches_the_code() -> None:
    assert SCHEMA_PATH.read_text() == render(), "run `python -m tools.schema_doc` and commit the result"
