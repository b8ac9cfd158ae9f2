"""The store master: `python -m deploy.stores import FILE.csv` loads it idempotently.

The CSV has the header `AreaCode,StoreName,StoreID` (quoted fields with commas occur);
re-importing updates names and area codes in place.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable
from pathlib import Path

import psycopg

from shared.settings import CommonSettings

HEADER = ("AreaCode", "StoreName", "StoreID")


class BadStoreFile(ValueError):
    pass


def parse_stores(lines: Iterable[str]) -> list[tuple[str, str, str]]:
    """(store_id, store_name, area_code) rows; raises BadStoreFile naming the line."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None or tuple(h.strip().lstrip("\ufeff") for h in header) != HEADER:
        raise BadStoreFile(f"line 1: header must be {','.join(HEADER)}")
    rows: dict[str, tuple[str, str, str]] = {}
    for row in reader:
        number = reader.line_num  # the file line the record ends on (names may span lines)
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 3 or not row[2].strip():
            raise BadStoreFile(f"line {number}: expected 3 fields with a StoreID, got {row!r}")
        area, name, store_id = (c.strip() for c in row)
        rows[store_id] = (store_id, name, area)
    return list(rows.values())


def import_stores(database_url: str, path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = parse_stores(handle)
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO stores (store_id, store_name, area_code) VALUES (%s, %s, %s)"
            " ON CONFLICT (store_id) DO UPDATE SET store_name = EXCLUDED.store_name,"
            " area_code = EXCLUDED.area_code", rows)
    return len(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.stores")
    sub = parser.add_subparsers(dest="cmd", required=True)
    imp = sub.add_parser("import", help="load a store master CSV (idempotent)")
    imp.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    settings = CommonSettings()
    import asyncio

    from shared.db import apply_migrations

    try:
        asyncio.run(apply_migrations(settings.database_url))
        count = import_stores(settings.database_url, args.file)
    except (BadStoreFile, OSError, psycopg.Error) as exc:
        print(f"imagejobs: store import failed: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    print(f"imported {count} stores from {args.file}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
