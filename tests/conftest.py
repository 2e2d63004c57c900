"""Make this checkout importable as `ansible_collections.llmops.platform` for pytest.

The repository root IS the collection. scripts/setup.sh links it to
.collections/ansible_collections/llmops/platform; putting .collections on sys.path lets tests import
`ansible_collections.llmops.platform.plugins...` exactly as modules do. `ansible_collections` is a
namespace package, so the collections of the `ansible` bundle in site-packages (ansible.posix,
kubernetes.core, ...) stay importable next to it; pytest_configure checks both, so a broken path
setup fails the run at once with a clear message instead of as odd ImportErrors later.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLLECTIONS = ROOT / ".collections"
LINK = COLLECTIONS / "ansible_collections" / "llmops" / "platform"

if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))


def pytest_configure(config: pytest.Config) -> None:
    # Test files in different folders share basenames (tests/unit/.../test_openai_health.py and
    # tests/integration/test_openai_health.py) and the folders are not packages: the default "prepend"
    # import mode would import both as `test_openai_health` and refuse the second. importlib mode names
    # each after its path.
    if config.getoption("importmode") == "prepend":
        config.option.importmode = "importlib"

    if not LINK.is_dir() or LINK.resolve() != ROOT:
        pytest.exit(f"{LINK} must link to {ROOT}: run `make setup` (scripts/setup.sh) first", returncode=4)
    for name in ("ansible_collections.llmops.platform.plugins", "ansible_collections.ansible.posix"):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            pytest.exit(
                f"cannot import {name} ({exc}): sys.path must hold {COLLECTIONS} and the tools virtualenv "
                "(run the tests through scripts/run)",
                returncode=4,
            )
