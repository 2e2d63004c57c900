"""The playbooks where users run them, none of which knows `make setup` (about 35 s in all):

- the collection as users get it: `ansible-galaxy collection build`, installed into a clean path, every playbook run
  from it by FQCN (llmops.platform.<playbook>) with only that path and the dependency collections (the tools
  virtualenv's `ansible` bundle) visible: no checkout, no .collections link, no ansible.cfg;
- an AWX project: a copy of the checkout's files, collections/requirements.yml's entry for this collection installed
  from there as AWX's project update does (ansible-galaxy in the project directory), the root-level playbooks loaded
  with AWX's collections path;
- a bare checkout: the error names the fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# What the tarball must not carry (galaxy.yml build_ignore): caches, build output, the repository's test harnesses
# and tooling. Its unit tests and sanity ignore files are part of the collection.
NOT_SHIPPED = (
    ".collections/",
    ".cache/",
    "tests/output/",
    "tests/integration/",
    "tests/molecule/",
    "molecule/",
    "build/",
    "awx/",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    base = tmp_path_factory.mktemp("tarball")
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    env = _clean_env(base)
    subprocess.run(
        ["ansible-galaxy", "collection", "build", "--output-path", str(base / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    tarball = base / "dist" / f"llmops-platform-{version}.tar.gz"
    # Offline and without dependencies: they are the bundle's, already on the collections search path.
    subprocess.run(
        [
            "ansible-galaxy",
            "collection",
            "install",
            "--offline",
            "--no-deps",
            "--force",
            "-p",
            str(base / "collections"),
            str(tarball),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=base,
    )
    return {"base": base, "tarball": tarball, "collections": base / "collections"}


def _clean_env(base: Path) -> Dict[str, str]:
    """An environment that knows nothing of this checkout: the installed path only, no ansible.cfg, a fresh HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    home = base / "home"
    home.mkdir(exist_ok=True)
    env.update(
        HOME=str(home),
        ANSIBLE_COLLECTIONS_PATH=str(base / "collections"),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_NOCOLOR="1",
    )
    return env


def _playbooks() -> List[str]:
    return sorted(f"llmops.platform.{p.stem}" for p in (ROOT / "playbooks").glob("*.yml"))


def _ansible_playbook(installed: Dict[str, Path], *args: str) -> subprocess.CompletedProcess:
    cwd = installed["base"]
    return subprocess.run(
        ["ansible-playbook", "-i", "localhost,", *args],
        check=False,
        capture_output=True,
        text=True,
        env=_clean_env(cwd),
        cwd=cwd,
        timeout=300,
    )


def test_tarball_ships_the_collection_without_test_harnesses(installed: Dict[str, Path]) -> None:
    with tarfile.open(installed["tarball"]) as tar:
        names = tar.getnames()
    assert "MANIFEST.json" in names and "meta/execution-environment.yml" in names
    assert any(n.startswith("roles/vllm_host/") for n in names)
    assert {f"playbooks/{p.split('.')[-1]}.yml" for p in _playbooks()} <= set(names)
    shipped = sorted(n for n in names if n.startswith(NOT_SHIPPED) or n.endswith((".pyc", ".tar.gz")))
    assert shipped == []


def test_every_playbook_loads_by_fqcn_from_the_installed_collection(installed: Dict[str, Path]) -> None:
    result = _ansible_playbook(installed, "--syntax-check", *_playbooks())
    assert result.returncode == 0, result.stdout + result.stderr
    root = installed["collections"] / "ansible_collections" / "llmops" / "platform" / "playbooks"
    for playbook in _playbooks():
        assert f"playbook: {root}/{playbook.split('.')[-1]}.yml" in result.stdout


def test_a_playbook_runs_from_the_installed_collection(installed: Dict[str, Path]) -> None:
    """ui.yml stopping forwards: a real run of roles (training_cluster, vllm_k8s, k8s_common) that needs no cluster."""
    result = _ansible_playbook(installed, "llmops.platform.ui", "-e", "llmops_ui_state=stopped")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "llmops.platform.k8s_common : Stop the port forwards started here" in result.stdout
    assert "failed=0" in result.stdout
    assert str(ROOT) not in result.stdout, "the run must not reach into the checkout"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files of the checkout as git would give them to AWX (tracked, or new and not ignored)."""
    dest = tmp_path_factory.mktemp("project")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    for name in filter(None, files.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def _root_playbook(project: Path, env: Dict[str, str], name: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ansible-playbook", "-i", "inventories/prod", "--syntax-check", name],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
        timeout=300,
    )


def test_an_awx_project_checkout_installs_itself(project: Path, tmp_path: Path) -> None:
    # Only this collection's entry (the others come from Galaxy, which the tests cannot reach; the bundle has them).
    requirements = yaml.safe_load((project / "collections" / "requirements.yml").read_text())
    own = [c for c in requirements["collections"] if c.get("type") == "dir"]
    assert own == [{"name": ".", "type": "dir"}]
    (tmp_path / "own.yml").write_text(yaml.safe_dump({"collections": own}))
    env = _clean_env(tmp_path)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(tmp_path / "requirements_collections")
    install = subprocess.run(
        [
            "ansible-galaxy",
            "collection",
            "install",
            "--no-deps",
            "-r",
            str(tmp_path / "own.yml"),
            "-p",
            str(tmp_path / "requirements_collections"),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert (tmp_path / "requirements_collections" / "ansible_collections" / "llmops" / "platform" / "roles").is_dir()
    result = _root_playbook(project, env, "external.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_bare_checkout_says_where_to_look(project: Path, tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(tmp_path / "empty")
    result = _root_playbook(project, env, "external.yml")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "llmops.platform.model_sync' was not found" in output
    assert "make setup, or ansible-galaxy collection install -r collections/requirements.yml" in output
