"""docs/asyncapi.yaml validated by the official AsyncAPI parser (@asyncapi/parser, Node), as a
downstream team's tooling would read it."""

from __future__ import annotations

import shutil
import subprocess

from deploy.devstack.paths import PROJECT_ROOT
from tools.asyncapi import DOC_PATH

CHECKER = PROJECT_ROOT / "tests" / "support" / "asyncapi"


def test_the_asyncapi_document_is_valid_for_the_asyncapi_parser() -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Node.js and npm are installed by deploy/install-system-deps.sh"
    if not (CHECKER / "node_modules" / "@asyncapi" / "parser").exists():
        installed = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=CHECKER,
                                   capture_output=True, text=True, timeout=300)
        assert installed.returncode == 0, installed.stdout + installed.stderr
    checked = subprocess.run([node, "validate.mjs", str(DOC_PATH)], cwd=CHECKER, capture_output=True,
                             text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "valid: 6 channels, 15 messages" in checked.stdout, checked.stdout
