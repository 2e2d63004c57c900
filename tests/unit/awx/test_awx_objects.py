"""The AWX objects of awx/vars/main.yml (what awx/configure.yml creates) against the code they drive.

- every job template points at a playbook of playbooks/, and every playbook has a job template;
- every survey variable (of a job template or of the workflow) is an option of the argument specs of the role entry
  points that playbook runs, with a survey type and choices that agree with the option's type and choices; or a
  llmops_* variable the playbook itself (or a filter it uses) reads;
- every credential injector feeds a variable a role declares and reads, or an environment variable read through an
  env lookup; every custom credential a job template takes feeds that playbook;
- the workflow is train -> merge -> deploy staging -> preflight -> approval -> promote (parity gate per host),
  every node after the merge has a failure path, and the rollback nodes exist;
- the inventories are the layouts of inventories/.
Nothing here talks to AWX: the data is checked against the repository.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
AWX_VARS = ROOT / "awx" / "vars" / "main.yml"

# Playbooks a job template may name before they exist in playbooks/ (written on another branch). A pending
# playbook's template is checked in full as soon as the file lands; remove it here then.
PENDING_PLAYBOOKS: frozenset = frozenset()

# AWX's own credential types a template may take (the others must be defined in awx/vars/main.yml).
BUILTIN_CREDENTIAL_TYPES = frozenset({"Machine", "Vault"})

# inventories/ directories that are no AWX inventory: demo's hosts are test containers made by `make demo`;
# cost-example describes the ADR's example fleet for the cost report, not hosts to run anything on.
NOT_AWX_INVENTORIES = frozenset({"demo", "cost-example"})

ROLE_PREFIX = "llmops.platform."
INCLUDE_KEYS = ("include_role", "import_role", "ansible.builtin.include_role", "ansible.builtin.import_role")
LLMOPS_VARIABLE = re.compile(r"\bllmops_[a-z0-9_]+\b")
JINJA_NAME = re.compile(r"{{\s*([a-zA-Z_][a-zA-Z0-9_]*)")
FILTER_USE = re.compile(r"llmops\.platform\.([a-z0-9_]+)")
ENV_LOOKUP = re.compile(r"""lookup\(\s*['"](?:ansible\.builtin\.)?env['"]\s*,\s*['"]([A-Z0-9_]+)['"]""")

# AWX survey type -> argument spec types it can feed.
SURVEY_TYPES = {
    "text": {"str", "path", "raw"},
    "textarea": {"str", "path", "raw"},
    "password": {"str", "raw"},
    "integer": {"int", "raw"},
    "float": {"float", "raw"},
    "multiplechoice": {"str", "bool", "raw"},
    "multiselect": {"list"},
}
BOOL_CHOICES = {"true", "false"}


@pytest.fixture(scope="module")
def awx() -> Dict[str, Any]:
    return yaml.safe_load(AWX_VARS.read_text())


# The YAML of the roles is read many times over (specs, task files): parse each file once, with libyaml when present.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=None)
def _load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_LOADER)  # noqa: S506 - a safe loader


@functools.lru_cache(maxsize=None)
def _role_files(role: str) -> Tuple[Tuple[Path, str], ...]:
    """(path, text) of the role's files other than its defaults and argument specs."""
    skipped = {ROOT / "roles" / role / "defaults", ROOT / "roles" / role / "meta"}
    paths = sorted(p for p in (ROOT / "roles" / role).rglob("*") if p.is_file() and p.parent not in skipped)
    return tuple((path, path.read_text(errors="replace")) for path in paths)


def _role_specs(role: str) -> Dict[str, Any]:
    return _load_yaml(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]


def _tasks(items: Any) -> Iterator[Dict[str, Any]]:
    """Every task of a task list, blocks opened."""
    for task in items or []:
        if not isinstance(task, dict):
            continue
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key))


def _strings(data: Any) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(data, list):
        for value in data:
            yield from _strings(value)


@functools.lru_cache(maxsize=None)
def role_entry_points(playbook: Path) -> Set[Tuple[str, str]]:
    """(role, entry point) of every llmops.platform role the playbook runs: roles:, include_role, import_role."""
    found: Set[Tuple[str, str]] = set()
    for play in _load_yaml(playbook) or []:
        if "import_playbook" in play or "ansible.builtin.import_playbook" in play:
            target = play.get("import_playbook") or play.get("ansible.builtin.import_playbook")
            # Its entry points come back without the collection prefix.
            found |= {(ROLE_PREFIX + role, entry) for role, entry in role_entry_points(playbook.parent / target)}
            continue
        for role in play.get("roles") or []:
            name = role if isinstance(role, str) else role.get("role") or role.get("name")
            found.add((name, "main"))
        for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            for task in _tasks(play.get(section)):
                for key in INCLUDE_KEYS:
                    if key in task:
                        found.add((task[key]["name"], task[key].get("tasks_from", "main")))
    unknown = {name for name, _entry in found if not name.startswith(ROLE_PREFIX)}
    assert not unknown, f"{playbook}: roles outside llmops.platform: {unknown}"
    entries = {(name[len(ROLE_PREFIX) :], entry) for name, entry in found}
    # Roles a role calls itself (model_sync reloads vllm_host's instances), from any of its task files.
    pending = sorted({role for role, _entry in entries})
    seen: Set[str] = set()
    while pending:
        role = pending.pop()
        if role in seen:
            continue
        seen.add(role)
        for path in (ROOT / "roles" / role / "tasks").glob("*.yml"):
            for task in _tasks(_load_yaml(path)):
                for key in INCLUDE_KEYS:
                    if key in task and task[key]["name"].startswith(ROLE_PREFIX):
                        called = task[key]["name"][len(ROLE_PREFIX) :]
                        entries.add((called, task[key].get("tasks_from", "main")))
                        pending.append(called)
    return entries


def playbook_options(playbook: Path) -> Dict[str, Dict[str, Any]]:
    """The argument spec options of every role entry point the playbook runs (main when the entry has no spec)."""
    options: Dict[str, Dict[str, Any]] = {}
    for role, entry in role_entry_points(playbook):
        specs = _role_specs(role)
        options.update(specs.get(entry, specs["main"])["options"])
    return options


def playbook_variables(playbook: Path) -> Set[str]:
    """llmops_* variables the playbook reads itself (in its data, not its comments) or through a filter it uses."""
    data = _load_yaml(playbook)
    names: Set[str] = set()
    for text in _strings(data):
        names |= set(LLMOPS_VARIABLE.findall(text))
        for plugin in FILTER_USE.findall(text):
            doc = ROOT / "plugins" / "filter" / f"{plugin}.yml"
            if doc.exists():
                names |= set(LLMOPS_VARIABLE.findall(doc.read_text()))
    for play in data or []:
        target = play.get("import_playbook") or play.get("ansible.builtin.import_playbook")
        if target:
            names |= playbook_variables(playbook.parent / target)
    return names


def role_reads(role: str, variable: str) -> bool:
    """The role uses the variable somewhere other than its defaults and argument specs."""
    pattern = re.compile(rf"\b{re.escape(variable)}\b")
    return any(pattern.search(text) for _path, text in _role_files(role))


def _roles() -> List[str]:
    return sorted(p.parent.parent.name for p in ROOT.glob("roles/*/meta/argument_specs.yml"))


def survey_problems(item: Dict[str, Any], options: Dict[str, Dict[str, Any]], own: Set[str]) -> List[str]:
    """Why a survey question does not fit the variable it sets (empty when it does)."""
    variable, kind = item["variable"], item["type"]
    problems: List[str] = []
    if kind not in SURVEY_TYPES:
        return [f"{variable}: survey type {kind!r} is not one of AWX's {sorted(SURVEY_TYPES)}"]
    choices = [str(c) for c in item.get("choices", [])]
    if kind in ("multiplechoice", "multiselect"):
        if not choices:
            problems.append(f"{variable}: {kind} without choices")
        if "default" in item and kind == "multiplechoice" and str(item["default"]) not in choices:
            problems.append(f"{variable}: default {item['default']!r} is not one of its choices {choices}")
    if kind == "integer" and "default" in item:
        lo, hi = item.get("min"), item.get("max")
        if not isinstance(item["default"], int) or (lo is not None and item["default"] < lo):
            problems.append(f"{variable}: default {item['default']!r} is below min {lo} or not an integer")
        elif hi is not None and item["default"] > hi:
            problems.append(f"{variable}: default {item['default']!r} is above max {hi}")
    if variable not in options:
        if variable not in own:
            problems.append(
                f"{variable}: no role entry point this playbook runs declares it, and the playbook does not read it"
            )
        return problems
    spec = options[variable]
    spec_type = spec.get("type", "str")
    if spec_type not in SURVEY_TYPES[kind]:
        problems.append(f"{variable}: survey type {kind} cannot set an option of type {spec_type}")
    if spec_type == "bool" and set(choices) != BOOL_CHOICES:
        problems.append(f"{variable}: a bool option's question must offer exactly 'true' and 'false', not {choices}")
    spec_choices = spec.get("choices")
    if spec_type == "list":
        spec_choices = spec.get("choices") or None
    if spec_choices is not None:
        if kind not in ("multiplechoice", "multiselect"):
            problems.append(f"{variable}: the option has choices {spec_choices}; the survey must offer them as choices")
        extra = set(choices) - {str(c) for c in spec_choices}
        if extra:
            problems.append(f"{variable}: survey choices {sorted(extra)} are not among the option's {spec_choices}")
    return problems


def test_every_playbook_has_a_job_template_and_every_template_a_playbook(awx: Dict[str, Any]) -> None:
    named = {t["playbook"] for t in awx["llmops_awx_job_templates"]}
    playbooks = {p.relative_to(ROOT).as_posix() for p in (ROOT / "playbooks").glob("*.yml")}
    assert playbooks - named == set(), f"playbooks without a job template: {sorted(playbooks - named)}"
    missing = {p for p in named - playbooks if p not in PENDING_PLAYBOOKS}
    assert missing == set(), f"job templates name playbooks that do not exist: {sorted(missing)}"
    names = [t["name"] for t in awx["llmops_awx_job_templates"]]
    assert len(names) == len(set(names)), "job template names must be unique"


def _existing_templates(awx: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    for template in awx["llmops_awx_job_templates"]:
        if (ROOT / template["playbook"]).exists():
            yield template


def test_survey_variables_are_role_variables_of_the_playbook(awx: Dict[str, Any]) -> None:
    problems: List[str] = []
    for template in _existing_templates(awx):
        playbook = ROOT / template["playbook"]
        options, own = playbook_options(playbook), playbook_variables(playbook)
        # A survey may also ask what the template's own extra_vars pass on to a role variable.
        own |= {
            name for value in (template.get("extra_vars") or {}).values() for name in JINJA_NAME.findall(str(value))
        }
        for item in template["survey"]:
            problems += [f"{template['name']}: {p}" for p in survey_problems(item, options, own)]
        # Variables the template defines itself (AWX templates these): role options, fed by its survey.
        asked = {item["variable"] for item in template["survey"]}
        for name, value in (template.get("extra_vars") or {}).items():
            if name not in options:
                problems.append(f"{template['name']}: extra_vars {name} is not an option of {template['playbook']}")
            unasked = set(JINJA_NAME.findall(str(value))) - asked
            if unasked:
                problems.append(f"{template['name']}: extra_vars {name} uses {unasked}, which its survey does not ask")
    assert problems == []


def test_the_survey_check_fails_what_it_should() -> None:
    """The check itself: a wrong type, a choice the role refuses, an unknown variable, a bool offered as text."""
    options = _role_specs("training_cluster")["main"]["options"]
    assert survey_problems({"variable": "training_cluster_precision", "type": "text"}, options, set())
    bad_choice = {"variable": "training_cluster_precision", "type": "multiplechoice", "choices": ["bf16", "int4"]}
    assert "int4" in " ".join(survey_problems(bad_choice, options, set()))
    assert survey_problems({"variable": "training_cluster_max_steps", "type": "float"}, options, set())
    assert survey_problems({"variable": "training_cluster_typo", "type": "text"}, options, set())
    as_text = {"variable": "training_cluster_use_cpu", "type": "text"}
    assert survey_problems(as_text, options, set())
    good = {"variable": "training_cluster_precision", "type": "multiplechoice", "choices": ["bf16"], "default": "bf16"}
    assert survey_problems(good, options, set()) == []


def _injected(credential_type: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    injectors = credential_type["injectors"]
    return injectors.get("extra_vars", {}), injectors.get("env", {})


def _env_reads() -> Set[str]:
    names: Set[str] = set()
    for top in ("roles", "inventories", "playbooks"):
        for path in (ROOT / top).rglob("*.yml"):
            names |= set(ENV_LOOKUP.findall(path.read_text()))
    return names


def test_credential_injectors_feed_variables_roles_read(awx: Dict[str, Any]) -> None:
    roles, env_reads = _roles(), _env_reads()
    declared = {role: set(_role_specs(role)["main"]["options"]) for role in roles}
    problems: List[str] = []
    for ctype in awx["llmops_awx_credential_types"]:
        injectors = ctype["injectors"]
        if set(injectors) - {"extra_vars", "env", "file"}:
            problems.append(f"{ctype['name']}: injectors other than extra_vars, env and file: {set(injectors)}")
        fields = {f["id"] for f in ctype["inputs"]["fields"]}
        files = {key.split(".", 1)[1] for key in injectors.get("file", {})}
        extra_vars, env = _injected(ctype)
        for value in _strings([extra_vars, env, injectors.get("file", {})]):
            for name in JINJA_NAME.findall(value):
                if name not in fields and name != "tower":
                    problems.append(f"{ctype['name']}: injector uses {name}, not one of its fields {sorted(fields)}")
            for file_name in re.findall(r"tower\.filename\.([a-z_]+)", value):
                if file_name not in files:
                    problems.append(f"{ctype['name']}: tower.filename.{file_name} has no file injector")
        for variable in extra_vars:
            readers = [r for r in roles if variable in declared[r] and role_reads(r, variable)]
            if not readers:
                problems.append(f"{ctype['name']}: injects {variable}, which no role declares and reads")
        for variable in env:
            if variable not in env_reads:
                problems.append(f"{ctype['name']}: sets ${variable}, which no role, playbook or inventory reads")
    assert problems == []


def test_job_templates_take_credentials_their_playbook_uses(awx: Dict[str, Any]) -> None:
    custom = {c["name"]: c for c in awx["llmops_awx_credential_types"]}
    env_reads = _env_reads()
    problems: List[str] = []
    for template in awx["llmops_awx_job_templates"]:
        for name in template["credential_types"]:
            if name not in custom and name not in BUILTIN_CREDENTIAL_TYPES:
                problems.append(f"{template['name']}: credential type {name!r} is neither defined nor AWX's own")
    for template in _existing_templates(awx):
        playbook = ROOT / template["playbook"]
        options, roles = playbook_options(playbook), {role for role, _entry in role_entry_points(playbook)}
        for name in template["credential_types"]:
            if name not in custom:
                continue
            extra_vars, env = _injected(custom[name])
            # Declared by an entry point the playbook runs, or read by one of its roles (model_sync's gate reads
            # vllm_host_api_key, vllm_host's variable), or an environment variable something reads.
            read = set(extra_vars) & set(options) or any(role_reads(r, v) for r in roles for v in extra_vars)
            if not read and not (set(env) & env_reads):
                problems.append(f"{template['name']}: {name} feeds nothing {template['playbook']} reads")
    assert problems == []


def test_inventories_are_the_layouts(awx: Dict[str, Any]) -> None:
    layouts = {p.name for p in (ROOT / "inventories").iterdir() if p.is_dir()} - NOT_AWX_INVENTORIES
    sources = {inv["source_path"] for inv in awx["llmops_awx_inventories"]}
    assert {Path(s).parent.name for s in sources} == layouts
    for source in sources:
        assert (ROOT / source).is_file(), source
    names = {inv["name"] for inv in awx["llmops_awx_inventories"]}
    for template in awx["llmops_awx_job_templates"]:
        assert template["inventory"] in names, template["name"]
    assert awx["llmops_awx_workflow"]["inventory"] in names


def _nodes(awx: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {node["identifier"]: node for node in awx["llmops_awx_workflow"]["nodes"]}


def _edges(node: Dict[str, Any], kind: str) -> List[str]:
    return [n["identifier"] for n in (node.get("related") or {}).get(f"{kind}_nodes", [])]


def test_workflow_train_to_production_with_rollback(awx: Dict[str, Any]) -> None:
    nodes = _nodes(awx)
    templates = {t["name"]: t for t in awx["llmops_awx_job_templates"]}
    assert len(nodes) == len(awx["llmops_awx_workflow"]["nodes"]), "node identifiers must be unique"
    for ident, node in nodes.items():
        for kind in ("success", "failure", "always"):
            for target in _edges(node, kind):
                assert target in nodes, f"{ident} -> {target}: no such node"
        ujt = node["unified_job_template"]
        if ujt["type"] == "job_template":
            assert ujt["name"] in templates, f"{ident}: no job template {ujt['name']!r}"
            if "job_type" in node:
                assert templates[ujt["name"]].get("ask_job_type_on_launch"), f"{ident}: its template fixes job_type"
        else:
            assert ujt["type"] == "workflow_approval", ident
    # The success path from the start (the node nothing points at) and what each step runs.
    targets = {t for node in nodes.values() for kind in ("success", "failure", "always") for t in _edges(node, kind)}
    starts = [ident for ident in nodes if ident not in targets]
    assert starts == ["train"], starts
    path, ident = [], "train"
    while ident:
        node = nodes[ident]
        ujt = node["unified_job_template"]
        step = templates[ujt["name"]]["playbook"] if ujt["type"] == "job_template" else "approval"
        path.append((step, node.get("job_type", "run")) if ujt["type"] == "job_template" else (step, ""))
        following = _edges(node, "success")
        assert len(following) <= 1, ident
        ident = following[0] if following else ""
    assert path == [
        ("playbooks/train.yml", "run"),
        ("playbooks/merge.yml", "run"),
        ("playbooks/internal.yml", "run"),  # deploy staging
        ("playbooks/hybrid.yml", "check"),  # preflight, promoting nothing
        ("approval", ""),
        ("playbooks/hybrid.yml", "run"),  # promote to production
    ]
    # Every step after the merge (which restores itself) has a failure path, and it ends in a rollback.
    rollbacks = {"playbooks/restore.yml", "playbooks/promote.yml"}
    for ident in ("deploy-staging", "preflight-production", "approval", "promote-production"):
        failure = _edges(nodes[ident], "failure")
        assert failure, f"{ident} has no failure path"
        for target in failure:
            assert templates[nodes[target]["unified_job_template"]["name"]]["playbook"] in rollbacks


def test_workflow_survey_feeds_its_nodes(awx: Dict[str, Any]) -> None:
    templates = {t["name"]: t for t in awx["llmops_awx_job_templates"]}
    used = [
        templates[node["unified_job_template"]["name"]]
        for node in awx["llmops_awx_workflow"]["nodes"]
        if node["unified_job_template"]["type"] == "job_template"
    ]
    problems: List[str] = []
    for item in awx["llmops_awx_workflow"]["survey"]:
        variable = item["variable"]
        fed = False
        for template in used:
            if any(variable in JINJA_NAME.findall(str(v)) for v in (template.get("extra_vars") or {}).values()):
                fed = True
            playbook = ROOT / template["playbook"]
            if playbook.exists():
                options, own = playbook_options(playbook), playbook_variables(playbook)
                if variable in options or variable in own:
                    problems += survey_problems(item, options, own)
                    fed = True
        if not fed:
            problems.append(f"{variable}: no node's playbook or template reads it")
    assert problems == []


def test_root_level_playbooks_import_playbooks() -> None:
    """`ansible-playbook -i inventories/prod external.yml` from the repository root runs playbooks/external.yml."""
    problems: List[str] = []
    for playbook in sorted((ROOT / "playbooks").glob("*.yml")):
        root_level = ROOT / playbook.name
        if not root_level.exists():
            problems.append(f"{playbook.name}: add a root-level {playbook.name} importing playbooks/{playbook.name}")
            continue
        plays = _load_yaml(root_level)
        assert [p.get("ansible.builtin.import_playbook") for p in plays] == [f"playbooks/{playbook.name}"]
    assert problems == []


# Shown by Ansible next to "the role 'llmops.platform.…' was not found" (it prints the two lines above the reference).
NOT_FOUND_HINT = "# Not found? make setup, or ansible-galaxy collection install -r collections/requirements.yml"


def test_a_missing_collection_error_shows_the_fix() -> None:
    problems: List[str] = []
    for playbook in sorted((ROOT / "playbooks").glob("*.yml")):
        lines = playbook.read_text().splitlines()
        refs = [i for i, line in enumerate(lines) if re.search(r"(role|name): llmops\.platform\.[a-z0-9_]+$", line)]
        if not refs:
            continue
        # The play whose roles: Ansible loads first, else the first include.
        first = next((i for i in refs if lines[i - 1].strip() == "roles:"), refs[0])
        above = lines[first - 2 : first]
        if NOT_FOUND_HINT not in [line.strip() for line in above]:
            problems.append(f"{playbook.name}:{first + 1}: put {NOT_FOUND_HINT!r} on one of the two lines above")
    assert problems == []
