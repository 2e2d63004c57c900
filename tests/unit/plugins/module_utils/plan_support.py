"""Shared by the tests of the roles' one-pass variable checks (test_vllm_host_plan.py, test_model_sync_plan.py).

conftest.py of tests/unit puts this folder on sys.path (pytest runs in importlib mode).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Dict

import yaml

ROOT = Path(__file__).resolve().parents[4]


def role_settings(role: str) -> Dict[str, Any]:
    """The role's default settings: `_<role>_settings` of roles/<role>/vars/main.yml with every
    `{{ <role>_X }}` resolved from roles/<role>/defaults/main.yml, so the tests follow a changed default."""
    directory = ROOT / "roles" / role
    defaults = yaml.safe_load((directory / "defaults" / "main.yml").read_text())
    mapping = yaml.safe_load((directory / "vars" / "main.yml").read_text())[f"_{role}_settings"]
    variable = re.compile(r"\{\{ (" + re.escape(role) + r"_\w+) \}\}")
    settings = {}
    for key, template in mapping.items():
        match = variable.fullmatch(template)
        assert match, f"_{role}_settings.{key} is not a plain variable: {template}"
        settings[key] = copy.deepcopy(defaults[match.group(1)])
    return settings
