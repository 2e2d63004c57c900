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


# Wall seconds of the slow test files, as the integration stage (2 workers on a 2-CPU machine) measured them
# (`--durations` in its output prints the current figures), and of each molecule scenario (tests/molecule runs
# each as one test). Files run longest first so that with pytest-xdist (tests/run_all.sh) the long ones start at
# once on different workers and the short ones fill the gaps at the end; what is not listed counts as short.
# Only the order of files changes: tests inside a file keep their order (several files run their cases in
# sequence on one deployment).
TEST_FILE_SECONDS = {
    "tests/k8s/test_internal_layout.py": 1900,
    "tests/integration/hosts/test_external_fleet.py": 1000,
    "tests/integration/hosts/test_model_sync.py": 900,
    "tests/integration/test_llamafactory_real.py": 500,
}
MOLECULE_FILE = "tests/molecule/test_scenarios.py"
MOLECULE_SECONDS = {"vllm_host": 400, "vllm_k8s": 180, "training_cluster": 170}


def _relative(item: pytest.Item) -> str:
    try:
        return Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return ""


def _seconds(item: pytest.Item) -> int:
    path = _relative(item)
    if path == MOLECULE_FILE and hasattr(item, "callspec"):
        return MOLECULE_SECONDS.get(item.callspec.params.get("scenario"), 0)
    return TEST_FILE_SECONDS.get(path, 0)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    items.sort(key=lambda item: -_seconds(item))  # stable: a file's tests keep their order


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """pytest-xdist's work units: one test file each (its module fixtures, a booted fleet or a cluster, are built
    once, on one worker), except that every molecule scenario is a unit of its own. Units go out in collection
    order (tests/run_all.sh passes --no-loadscope-reorder), i.e. longest first."""
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return nodeid if path.endswith(MOLECULE_FILE) else path

    return FileScheduling(config, log)
