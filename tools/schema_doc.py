"""`python -m tools.schema_doc`: write docs/events.schema.json, the JSON Schema of every event
downstream consumers can read from the topics (a unit test keeps it in step with the code)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import TypeAdapter

from shared.events import AnyEvent

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "events.schema.json"


def render() -> str:
    schema = TypeAdapter(AnyEvent).json_schema()
    schema["title"] = "imagejobs events (schema_version 1)"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(render())
    sys.stdout.write(f"wrote {SCHEMA_PATH}\n")
