"""Where the project, its git-ignored state and the broker's jars live."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KAFKA_POM = PROJECT_ROOT / "deploy" / "kafka" / "pom.xml"
KAFKA_LIB = PROJECT_ROOT / "deploy" / "kafka" / "lib"


def state_dir() -> Path:
    """The git-ignored folder holding data dirs and logs (`IMAGEJOBS_STATE_DIR` overrides)."""
    return Path(os.environ.get("IMAGEJOBS_STATE_DIR", PROJECT_ROOT / ".state")).resolve()
