"""A job template of awx/vars/main.yml launched the way AWX launches it: through ansible-runner, the engine AWX runs
jobs with, from a private data directory holding what AWX would put there.

What AWX does at launch, and what `launch()` does the same way:
- extra variables: the template's own `extra_vars`, then the survey's answers (each question's default unless the
  caller answers it), then every credential's `extra_vars` injectors - written to ``env/extravars`` (mode 0600), never
  on a command line;
- environment: each credential's `env` injectors, written to ``env/envvars`` (0600);
- files: each credential's `file` injectors (``template.NAME``) rendered into a 0600 file of the private data
  directory, whose path the other injectors reach as ``tower.filename.NAME``;
- injector templates are rendered with Jinja from the credential's inputs, as AWX does (its sandbox aside);
- job type check adds ``--check``; the inventory is the template's inventory's source (``inventories/<layout>``).

What it does NOT do: talk to AWX, run AWX's project update (the collections come from the checkout's .collections,
as `make setup` made them; tests/integration/test_collection_tarball.py runs the project update's install on its
own), build the execution environment image (the job runs in this machine's tools virtualenv).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import jinja2
import yaml

ROOT = Path(__file__).resolve().parents[2]
AWX_VARS = ROOT / "awx" / "vars" / "main.yml"


def awx_data() -> Dict[str, Any]:
    return yaml.safe_load(AWX_VARS.read_text())


def template(name: str) -> Dict[str, Any]:
    for item in awx_data()["llmops_awx_job_templates"]:
        if item["name"] == name:
            return item
    raise KeyError(f"no job template {name!r} in {AWX_VARS}")


def inventory_source(name: str) -> Path:
    for item in awx_data()["llmops_awx_inventories"]:
        if item["name"] == name:
            return ROOT / item["source_path"]
    raise KeyError(f"no inventory {name!r} in {AWX_VARS}")


def survey_defaults(survey: List[Dict[str, Any]]) -> Dict[str, Any]:
    """AWX sends a question's default when the operator keeps it (typed: integers and floats as numbers)."""
    answers: Dict[str, Any] = {}
    for question in survey:
        if "default" not in question or question["default"] in ("", None):
            continue
        value = question["default"]
        if question["type"] == "integer":
            value = int(value)
        elif question["type"] == "float":
            value = float(value)
        answers[question["variable"]] = value
    return answers


@dataclass
class Job:
    status: str
    rc: int
    stdout: str
    private_data_dir: Path
    extravars: Dict[str, Any]
    envvars: Dict[str, str]
    files: Dict[str, Path] = field(default_factory=dict)


def write_private(path: Path, text: str) -> None:
    """A new file only its owner can read (what AWX writes into a job's private data directory)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def render(value: Any, context: Dict[str, Any]) -> Any:
    if isinstance(value, str):
        # Injector values go into variable files and the environment, never into HTML: nothing to escape.
        environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701
        return environment.from_string(value).render(**context)
    return value


def launch(
    name: str,
    work: Path,
    *,
    credentials: Optional[Dict[str, Dict[str, str]]] = None,
    answers: Optional[Dict[str, Any]] = None,
    inventory: Optional[Path] = None,
    job_type: str = "run",
    env: Optional[Dict[str, str]] = None,
    timeout: int = 900,
) -> Job:
    """Launch job template `name` with credentials {credential type name: inputs} and survey answers."""
    import ansible_runner

    spec = template(name)
    types = {t["name"]: t for t in awx_data()["llmops_awx_credential_types"]}
    credentials = credentials or {}
    unknown = set(credentials) - set(spec.get("credential_types", []))
    assert not unknown, f"{name} takes no credential of type {sorted(unknown)}"
    private = work / f"job-{name.replace(' ', '-')}"
    shutil.rmtree(private, ignore_errors=True)
    (private / "env").mkdir(parents=True)
    extravars: Dict[str, Any] = dict(spec.get("extra_vars") or {})
    extravars.update(survey_defaults(spec.get("survey") or []))
    extravars.update(answers or {})
    envvars: Dict[str, str] = dict(env or {})
    files: Dict[str, Path] = {}
    for type_name, inputs in credentials.items():
        injectors = types[type_name]["injectors"]
        context: Dict[str, Any] = dict(inputs)
        filenames: Dict[str, str] = {}
        for key, content in (injectors.get("file") or {}).items():
            path = private / f"cred-{len(files)}-{key.split('.', 1)[1]}"
            write_private(path, render(content, context))
            files[key] = path
            filenames[key.split(".", 1)[1]] = str(path)
        context["tower"] = {"filename": filenames}
        for key, value in (injectors.get("env") or {}).items():
            envvars[key] = render(value, context)
        for key, value in (injectors.get("extra_vars") or {}).items():
            extravars[key] = render(value, context)
    # The job's environment: where this checkout keeps ansible.cfg and the collections (AWX: the EE's), then the
    # credentials' env injectors.
    runner_env = {
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
        "ANSIBLE_NOCOLOR": "1",
    }
    write_private(private / "env" / "extravars", json.dumps(extravars))
    write_private(private / "env" / "envvars", json.dumps({**runner_env, **envvars}))
    cmdline = "--check" if job_type == "check" else ""
    result = ansible_runner.run(
        private_data_dir=str(private),
        project_dir=str(ROOT),
        playbook=spec["playbook"],
        inventory=str(inventory or inventory_source(spec["inventory"])),
        cmdline=cmdline or None,
        timeout=timeout,
        quiet=True,
    )
    stdout = result.stdout.read() if result.stdout else ""
    return Job(result.status, result.rc, stdout, private, extravars, envvars, files)
