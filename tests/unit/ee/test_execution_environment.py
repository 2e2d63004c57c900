"""The execution environment (execution-environment.yml) and what the collection declares for it, against the code.

- The Python distributions the collection's plugins import (an ast walk of plugins/, the standard library and
  ansible-core's own requirements left out) are declared in meta/ee-requirements.txt; the collections its roles,
  playbooks and plugins use are galaxy.yml dependencies, collections/requirements.yml entries and EE collections;
  the programs its roles run on the controller are in meta/ee-bindep.txt or installed by the EE.
- The EE pins what the test suite runs with: ansible-core, ansible-runner and the dependency collections of the
  tools virtualenv's `ansible` bundle, and this collection's version.
- `ansible-builder create` makes the build context with the collection's tarball in it, and `ansible-builder
  introspect` of the built, installed collection lists every Python distribution the imports need.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Set

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]
EE_FILE = ROOT / "execution-environment.yml"
COLLECTION = "llmops.platform"
# Collections that come with ansible-core itself (never a dependency to declare).
CORE_COLLECTIONS = frozenset({"ansible.builtin", "ansible.legacy"})
# Namespaces whose collections the YAML may name (a word.word.word elsewhere is a file name or a dotted key).
COLLECTION_NAMESPACES = frozenset({"ansible", "community", "kubernetes", "awx", "containers", "cloud"})
FQCN = re.compile(r"\b([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*\b")
# Where a role's task or a plugin says it needs a program on the controller -> the bindep names that provide it.
PROGRAMS = {
    "ansible.posix.synchronize": {"rsync", "openssh-client", "openssh-clients"},
}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def ee() -> Dict[str, Any]:
    return _yaml(EE_FILE)


@pytest.fixture(scope="module")
def galaxy() -> Dict[str, Any]:
    return _yaml(ROOT / "galaxy.yml")


def plugin_imports() -> Dict[str, Set[str]]:
    """Top-level modules imported by the plugins (absolute imports, standard library left out) -> files."""
    found: Dict[str, Set[str]] = {}
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "ansible_collections":
                    top = ".".join(name.split(".")[:3])
                if name.split(".")[0] not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def core_requirements() -> Set[str]:
    """ansible-core and the distributions it requires itself: always in an EE."""
    requires = importlib.metadata.requires("ansible-core") or []
    return {"ansible-core"} | {canonicalize_name(Requirement(r).name) for r in requires if "extra ==" not in r}


def declared_requirements() -> Set[str]:
    names = set()
    for line in (ROOT / "meta" / "ee-requirements.txt").read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            names.add(canonicalize_name(Requirement(requirement).name))
    return names


def needed_distributions() -> Dict[str, str]:
    """Distribution (canonical) -> the import that needs it, for every third-party import of the plugins."""
    providers = importlib.metadata.packages_distributions()
    needed: Dict[str, str] = {}
    for top, files in plugin_imports().items():
        if top.startswith("ansible_collections."):
            continue
        if top == "ansible":
            needed["ansible-core"] = top
            continue
        dists = providers.get(top)
        assert dists, f"{top} (imported by {sorted(files)}) is installed nowhere here: add it to requirements/tools.txt"
        needed[canonicalize_name(dists[0])] = f"{top} ({', '.join(sorted(files))})"
    return needed


def _task_texts() -> Iterator[str]:
    """The roles' and playbooks' YAML, where modules, filters, lookups and action groups are named by FQCN."""
    for top in ("roles", "playbooks"):
        for path in sorted((ROOT / top).rglob("*.yml")):
            yield path.read_text()


def used_collections() -> Set[str]:
    """Collections named by FQCN in the roles and playbooks, or imported (module_utils) by the plugins."""
    used: Set[str] = set()
    for text in _task_texts():
        for namespace, name in FQCN.findall(text):
            if namespace in COLLECTION_NAMESPACES:
                used.add(f"{namespace}.{name}")
    for plugin_import in plugin_imports():
        if plugin_import.startswith("ansible_collections."):
            used.add(plugin_import.split(".", 1)[1])
    return used - CORE_COLLECTIONS - {COLLECTION}


def bundled_version(fqcn: str) -> str:
    namespace, name = fqcn.split(".")
    for base in map(Path, sys.path):
        manifest = base / "ansible_collections" / namespace / name / "MANIFEST.json"
        if manifest.is_file():
            return json.loads(manifest.read_text())["collection_info"]["version"]
    raise AssertionError(f"{fqcn} is not installed in the tools virtualenv")


def test_every_imported_distribution_is_declared() -> None:
    missing = {dist: why for dist, why in needed_distributions().items() if dist not in declared_requirements()}
    missing = {dist: why for dist, why in missing.items() if dist not in core_requirements()}
    assert missing == {}, f"declare these in meta/ee-requirements.txt: {missing}"


def test_the_import_walk_sees_the_kubernetes_client() -> None:
    """The walk itself: the action plugins' guarded kubernetes import is found, and the stdlib is not."""
    imports = plugin_imports()
    assert "plugins/action/k8s_job_wait.py" in imports["kubernetes"]
    assert "json" not in imports and "os" not in imports
    assert needed_distributions()["kubernetes"].startswith("kubernetes")


def test_used_collections_are_dependencies_everywhere(galaxy: Dict[str, Any], ee: Dict[str, Any]) -> None:
    used = used_collections()
    assert {"kubernetes.core", "ansible.posix", "community.crypto"} <= used
    dependencies = set(galaxy["dependencies"])
    assert used - dependencies == set(), f"galaxy.yml dependencies miss {sorted(used - dependencies)}"
    requirements = {c["name"] for c in _yaml(ROOT / "collections" / "requirements.yml")["collections"]}
    assert dependencies - requirements == set(), "collections/requirements.yml must list galaxy.yml's dependencies"
    ee_collections = {c["name"] for c in ee["dependencies"]["galaxy"]["collections"]}
    assert dependencies - ee_collections == set(), "execution-environment.yml must install galaxy.yml's dependencies"


def test_ee_pins_what_the_tests_run_with(galaxy: Dict[str, Any], ee: Dict[str, Any]) -> None:
    deps = ee["dependencies"]
    assert deps["ansible_core"]["package_pip"] == f"ansible-core=={importlib.metadata.version('ansible-core')}"
    assert deps["ansible_runner"]["package_pip"] == f"ansible-runner=={importlib.metadata.version('ansible-runner')}"
    tarball = f"llmops-platform-{galaxy['version']}.tar.gz"
    pinned = {}
    for collection in deps["galaxy"]["collections"]:
        if collection.get("type") == "file":
            assert collection["name"] == f"collections/{tarball}", "the EE installs this collection's own version"
        else:
            pinned[collection["name"]] = collection["version"]
    assert pinned == {name: bundled_version(name) for name in galaxy["dependencies"]}
    assert [f["src"] for f in ee["additional_build_files"]] == [f"build/{tarball}"]


def test_programs_the_roles_run_are_in_the_ee(ee: Dict[str, Any]) -> None:
    bindep = (ROOT / "meta" / "ee-bindep.txt").read_text()
    declared = {line.split()[0] for line in bindep.splitlines() if line.strip() and not line.startswith("#")}
    content = "\n".join(_task_texts())
    for evidence, packages in PROGRAMS.items():
        if evidence in content:
            assert packages <= declared, f"{evidence} runs {sorted(packages - declared)} on the controller"
    # kubectl and helm (the roles' *_kubectl_binary and vllm_k8s_helm_binary) come from the EE's own build steps.
    final = " ".join(ee["additional_build_steps"]["append_final"])
    for program in ("kubectl", "helm"):
        assert re.search(rf"_{program}_binary: {program}\b", "\n".join(_defaults())), program
        assert f"/output/kube-tools/{program}" in final, f"the EE does not install {program}"


def _defaults() -> Iterator[str]:
    for path in ROOT.glob("roles/*/defaults/main.yml"):
        yield path.read_text()


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory, galaxy: Dict[str, Any]) -> Path:
    out = tmp_path_factory.mktemp("build")
    subprocess.run(
        ["ansible-galaxy", "collection", "build", "--output-path", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out / f"llmops-platform-{galaxy['version']}.tar.gz"


def test_builder_context_and_introspection(tmp_path: Path, tarball: Path, ee: Dict[str, Any]) -> None:
    # The EE file next to build/<tarball>: a checkout after `ansible-galaxy collection build --output-path build/`.
    (tmp_path / "build").mkdir()
    shutil.copy(tarball, tmp_path / "build" / tarball.name)
    shutil.copy(EE_FILE, tmp_path / EE_FILE.name)
    context = tmp_path / "context"
    subprocess.run(
        [
            "ansible-builder",
            "create",
            "-f",
            str(tmp_path / EE_FILE.name),
            "-c",
            str(context),
            "--output-filename",
            "Containerfile",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert (context / "_build" / "collections" / tarball.name).is_file()
    galaxy_requirements = _yaml(context / "_build" / "requirements.yml")
    assert galaxy_requirements == ee["dependencies"]["galaxy"]
    containerfile = (context / "Containerfile").read_text()
    assert "ansible-galaxy collection install" in containerfile
    assert "--require-hashes" in containerfile and "/usr/local/bin/" in containerfile

    # What the builder stage introspects: the collection as installed from its tarball.
    installed = tmp_path / "collections"
    subprocess.run(
        [
            "ansible-galaxy",
            "collection",
            "install",
            "--offline",
            "--no-deps",
            "--force",
            "-p",
            str(installed),
            str(tarball),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    introspected = subprocess.run(
        ["ansible-builder", "introspect", "--sanitize", str(installed)], check=True, capture_output=True, text=True
    ).stdout
    data = yaml.safe_load(introspected.split("\n", 1)[1])
    python = {canonicalize_name(Requirement(line.split("#", 1)[0].strip()).name) for line in data.get("python", [])}
    system = " ".join(data.get("system", []))
    wanted = set(needed_distributions()) - core_requirements()
    assert wanted, "the plugins import something beyond ansible-core (the kubernetes client)"
    assert wanted - python == set(), f"ansible-builder introspect misses {sorted(wanted - python)}: {introspected}"
    assert "rsync" in system and "openssh-client" in system
