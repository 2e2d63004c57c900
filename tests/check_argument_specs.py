"""Fail when a role's defaults/main.yml and meta/argument_specs.yml disagree.

Every variable in defaults must be declared in the `main` entry point with the same default, and
every declared option with a default must be in defaults (the specs are the documentation users read).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def check_role(role: Path) -> list[str]:
    errors: list[str] = []
    defaults_file = role / "defaults" / "main.yml"
    specs_file = role / "meta" / "argument_specs.yml"
    if not specs_file.exists():
        return [f"{role.name}: missing meta/argument_specs.yml"]
    defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.exists() else {}
    defaults = defaults or {}
    specs = yaml.safe_load(specs_file.read_text()) or {}
    options = specs.get("argument_specs", {}).get("main", {}).get("options", {})
    for name, value in defaults.items():
        if name not in options:
            errors.append(f"{role.name}: default {name} is not declared in meta/argument_specs.yml")
            continue
        if "default" not in options[name]:
            errors.append(f"{role.name}: {name} has a default in defaults/main.yml but none in the spec")
        elif options[name]["default"] != value:
            errors.append(f"{role.name}: {name} default differs: defaults={value!r} spec={options[name]['default']!r}")
    for name, opt in options.items():
        if "default" in opt and name not in defaults:
            errors.append(f"{role.name}: spec option {name} has a default but is missing from defaults/main.yml")
        if not opt.get("description"):
            errors.append(f"{role.name}: spec option {name} has no description")
    return errors


def main() -> int:
    roles = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir()) if (ROOT / "roles").is_dir() else []
    errors = [e for role in roles for e in check_role(role)]
    for error in errors:
        print(error, file=sys.stderr)
    print(f"argument specs: {len(roles)} role(s) checked, {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
