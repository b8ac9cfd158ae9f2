"""Parsing the store master CSV (deploy/stores.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from deploy.stores import BadStoreFile, parse_stores

STORE_MASTER = Path(__file__).resolve().parents[2] / "data" / "StoreMasterAssignment.csv"
HEADER = "AreaCode,StoreName,StoreID\n"


def parse(text: str) -> list[tuple[str, str, str]]:
    return parse_stores(io.StringIO(text, newline=""))


def test_rows_become_id_name_area() -> None:
    assert parse(HEADER + "710006,B P STORE,S00339198\n710007,MONAJ STORE,S00339204\n") == [
        ("S00339198", "B P STORE", "710006"), ("S00339204", "MONAJ STORE", "710007")]


def test_quoted_field_with_comma() -> None:
    assert parse(HEADER + '710006,"SHOP, NO 1",S1\n') == [("S1", "SHOP, NO 1", "710006")]


def test_quoted_field_with_escaped_quote() -> None:
    assert parse(HEADER + '1,"THE ""BEST"" SHOP",S2\n') == [("S2", 'THE "BEST" SHOP', "1")]


def test_blank_lines_are_skipped() -> None:
    assert parse(HEADER + "\n1,A,S1\n\n  ,  ,  \n2,B,S2\n\n") == [("S1", "A", "1"), ("S2", "B", "2")]


def test_fields_are_stripped_and_crlf_accepted() -> None:
    assert parse("AreaCode,StoreName,StoreID\r\n 1 , A , S1 \r\n") == [("S1", "A", "1")]


def test_duplicate_store_id_keeps_the_last_row() -> None:
    rows = parse(HEADER + "1,OLD NAME,S1\n2,B,S2\n3,NEW NAME,S1\n")
    assert len(rows) == 2
    assert dict((r[0], r) for r in rows)["S1"] == ("S1", "NEW NAME", "3")


def test_header_with_bom_is_accepted() -> None:
    assert parse("\ufeff" + HEADER + "1,A,S1\n") == [("S1", "A", "1")]


@pytest.mark.parametrize("text", ["", "StoreID,StoreName,AreaCode\n1,A,S1\n", "1,A,S1\n", "AreaCode,StoreName\n"])
def test_wrong_or_missing_header_names_line_1(text: str) -> None:
    with pytest.raises(BadStoreFile, match=r"^line 1:"):
        parse(text)


def test_row_with_two_fields_names_its_line() -> None:
    with pytest.raises(BadStoreFile, match=r"^line 4:"):
        parse(HEADER + "1,A,S1\n\n2,ONLY TWO\n3,C,S3\n")


@pytest.mark.parametrize("row", ["1,A,S1,extra", "1,A,", "1,A,   "])
def test_row_with_wrong_fields_or_no_store_id_names_its_line(row: str) -> None:
    with pytest.raises(BadStoreFile, match=r"^line 3:"):
        parse(HEADER + "1,A,S1\n" + row + "\n")


def test_line_number_counts_lines_after_a_multiline_quoted_name() -> None:
    text = HEADER + '1,"TWO\nLINES",S1\n2,BROKEN\n'  # the bad row is on physical line 4
    with pytest.raises(BadStoreFile, match=r"^line 4:"):
        parse(text)


def test_real_store_master() -> None:
    with STORE_MASTER.open(newline="", encoding="utf-8") as handle:
        rows = parse_stores(handle)
    assert len(rows) == 4944
    ids = {store_id for store_id, _, _ in rows}
    assert len(ids) == 4944
    assert {"S00339218", "S01408764"} <= ids
    assert all(store_id and area for store_id, _, area in rows)
