#!/usr/bin/python
# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: host_state_info
short_description: Read what a role manages on a host in one round trip
version_added: 0.1.0
description:
  - Reads, in one module run, the state of the files, directories, links, accounts, packages and systemd
    units a role manages, plus the host properties its preflight checks (operating system family, service
    manager, a Python's version, free disk space, CPU flags).
  - The P(llmops.platform.vllm_host#role) role calls it once and then runs a writing task only for what differs
    (compared on the controller with the P(llmops.platform.needs_write#filter) filter), so an unchanged re-run
    costs one read instead of one round trip per file.
  - Never changes anything.
author:
  - llmops.platform maintainers (@llmops)
options:
  files:
    description:
      - Paths to describe (RV(files)). Regular files up to O(max_hash_bytes) are hashed (sha1).
    type: list
    elements: path
    default: []
  read:
    description: Small text files whose content to return (RV(contents)); at most 64 KiB each.
    type: list
    elements: path
    default: []
  globs:
    description: Shell patterns to expand (RV(matches)), e.g. C(/etc/systemd/system/vllm@*.service.d).
    type: list
    elements: str
    default: []
  users:
    description: Account names whose existence to report (RV(users)).
    type: list
    elements: str
    default: []
  groups:
    description: Group names whose existence to report (RV(groups)).
    type: list
    elements: str
    default: []
  packages:
    description: OS package names whose installation to report (RV(packages)); dpkg or rpm.
    type: list
    elements: str
    default: []
  units:
    description: systemd units to describe (RV(units)), in one C(systemctl show) call.
    type: list
    elements: str
    default: []
  python:
    description: A Python interpreter whose version to report (RV(python_version)).
    type: path
  disk_path:
    description:
      - Report the free space (RV(free_mb)) of the file system holding this path or its nearest existing parent.
    type: path
  max_hash_bytes:
    description: Files larger than this are described but not hashed.
    type: int
    default: 16777216
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Only reads; reads the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Read the unit files, the service account and the units at once
  llmops.platform.host_state_info:
    files: [/etc/systemd/system/vllm@.service, /etc/vllm]
    users: [vllm]
    units: [vllm@main.service]
    packages: [haproxy]
  register: state

- name: Write the unit only when it differs
  ansible.builtin.template:
    src: vllm@.service.j2
    dest: /etc/systemd/system/vllm@.service
    mode: "0644"
  when: >-
    state.files | llmops.platform.needs_write('/etc/systemd/system/vllm@.service',
    lookup('ansible.builtin.template', 'vllm@.service.j2'), '0644')
"""

RETURN = r"""
files:
  description: Per path, C(exists), C(type) (file, directory, link, other), C(mode) (e.g. C(0644)), C(owner), C(group),
    C(size), C(sha1) (regular files up to O(max_hash_bytes)), C(target) (links).
  type: dict
  returned: always
contents:
  description: Per path of O(read), its text, or null when it cannot be read.
  type: dict
  returned: always
matches:
  description: Per pattern of O(globs), the sorted matching paths.
  type: dict
  returned: always
users:
  description: Per name, whether the account exists.
  type: dict
  returned: always
groups:
  description: Per name, whether the group exists.
  type: dict
  returned: always
packages:
  description: Per name, whether the package is installed.
  type: dict
  returned: always
units:
  description: Per unit, C(load), C(active), C(sub), C(enabled) (UnitFileState), C(main_pid), C(n_restarts).
  type: dict
  returned: always
os_family:
  description: C(Debian), C(RedHat) or the C(ID) of /etc/os-release.
  type: str
  returned: always
distribution:
  description: C(PRETTY_NAME) of /etc/os-release.
  type: str
  returned: always
service_mgr:
  description: C(systemd) when PID 1 is systemd, else the name of PID 1.
  type: str
  returned: always
python_version:
  description: C(major.minor) of O(python), or null when it cannot run.
  type: str
  returned: when O(python) is given
free_mb:
  description: Free MiB under O(disk_path).
  type: int
  returned: when O(disk_path) is given
cpu_flags:
  description: The CPU's flags from /proc/cpuinfo.
  type: list
  elements: str
  returned: always
"""

import glob
import grp
import hashlib
import os
import pwd
import shutil
import stat
import subprocess

from ansible.module_utils.basic import AnsibleModule

UNIT_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "UnitFileState", "MainPID", "NRestarts")


def describe(path, max_hash_bytes):
    try:
        info = os.lstat(path)
    except OSError:
        return {"exists": False}
    result = {
        "exists": True,
        "mode": f"{stat.S_IMODE(info.st_mode):04o}",
        "size": info.st_size,
    }
    try:
        result["owner"] = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        result["owner"] = str(info.st_uid)
    try:
        result["group"] = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        result["group"] = str(info.st_gid)
    if stat.S_ISLNK(info.st_mode):
        result["type"] = "link"
        result["target"] = os.readlink(path)
    elif stat.S_ISDIR(info.st_mode):
        result["type"] = "directory"
    elif stat.S_ISREG(info.st_mode):
        result["type"] = "file"
        if info.st_size <= max_hash_bytes:
            digest = hashlib.sha1()  # noqa: S324 - compared with Ansible's own sha1 checksums, not for security
            try:
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
                result["sha1"] = digest.hexdigest()
            except OSError:
                pass  # unreadable (not root): described without a checksum, so needs_write says it differs
    else:
        result["type"] = "other"
    return result


def read_text(path):
    try:
        with open(path, "rb") as handle:
            return handle.read(65536).decode("utf-8", "replace")
    except OSError:
        return None


def exists(lookup, name):
    try:
        lookup(name)
        return True
    except KeyError:
        return False


def packages_installed(names):
    if not names:
        return {}
    if shutil.which("dpkg-query"):
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *names],
            capture_output=True,
            text=True,
            check=False,
        )
        installed = {
            line.split()[0] for line in proc.stdout.splitlines() if len(line.split()) > 1 and line.split()[1] == "ii"
        }
        return {name: name in installed for name in names}
    if shutil.which("rpm"):
        return {
            name: subprocess.run(["rpm", "-q", name], capture_output=True, check=False).returncode == 0
            for name in names
        }
    return {name: False for name in names}


def units_state(units):
    if not units or not shutil.which("systemctl"):
        return {}
    proc = subprocess.run(
        ["systemctl", "show", "--property=" + ",".join(UNIT_PROPERTIES), "--", *units],
        capture_output=True,
        text=True,
        check=False,
    )
    blocks = proc.stdout.strip("\n").split("\n\n") if proc.stdout.strip() else []
    if proc.returncode != 0 or len(blocks) != len(units):
        # No systemd to ask (a container, a chroot) or an answer that cannot be matched to the names: report no
        # unit rather than one unit's state under another's name.
        return {}
    result = {}
    for block, unit in zip(blocks, units):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        result[unit] = {
            "load": props.get("LoadState", ""),
            "active": props.get("ActiveState", ""),
            "sub": props.get("SubState", ""),
            "enabled": props.get("UnitFileState", ""),
            "main_pid": int(props.get("MainPID", "0") or 0),
            "n_restarts": int(props.get("NRestarts", "0") or 0),
        }
    return result


def os_release():
    values = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as handle:
            for line in handle:
                if "=" in line:
                    key, value = line.rstrip("\n").split("=", 1)
                    values[key] = value.strip().strip('"')
    except OSError:
        pass
    ids = [values.get("ID", ""), *values.get("ID_LIKE", "").split()]
    if any(i in ("debian", "ubuntu") for i in ids):
        family = "Debian"
    elif any(i in ("rhel", "fedora", "centos", "rocky", "almalinux") for i in ids):
        family = "RedHat"
    else:
        family = values.get("ID", "unknown")
    return family, values.get("PRETTY_NAME", "")


def service_manager():
    try:
        with open("/proc/1/comm", encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return "unknown"


def cpu_flags():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def main():
    module = AnsibleModule(
        argument_spec={
            "files": {"type": "list", "elements": "path", "default": []},
            "read": {"type": "list", "elements": "path", "default": []},
            "globs": {"type": "list", "elements": "str", "default": []},
            "users": {"type": "list", "elements": "str", "default": []},
            "groups": {"type": "list", "elements": "str", "default": []},
            "packages": {"type": "list", "elements": "str", "default": []},
            "units": {"type": "list", "elements": "str", "default": []},
            "python": {"type": "path"},
            "disk_path": {"type": "path"},
            "max_hash_bytes": {"type": "int", "default": 16777216},
        },
        supports_check_mode=True,
    )
    params = module.params
    family, distribution = os_release()
    result = {
        "changed": False,
        "files": {path: describe(path, params["max_hash_bytes"]) for path in params["files"]},
        "contents": {path: read_text(path) for path in params["read"]},
        "matches": {pattern: sorted(glob.glob(pattern)) for pattern in params["globs"]},
        "users": {name: exists(pwd.getpwnam, name) for name in params["users"]},
        "groups": {name: exists(grp.getgrnam, name) for name in params["groups"]},
        "packages": packages_installed(params["packages"]),
        "units": units_state(params["units"]),
        "os_family": family,
        "distribution": distribution,
        "service_mgr": service_manager(),
        "cpu_flags": cpu_flags(),
    }
    if params["python"]:
        try:
            proc = subprocess.run(
                [params["python"], "-c", 'import sys, venv; print("%d.%d" % sys.version_info[:2])'],
                capture_output=True,
                text=True,
                check=False,
            )
            result["python_version"] = proc.stdout.strip() if proc.returncode == 0 else None
        except OSError:  # missing or not executable: "cannot run", which preflight reports
            result["python_version"] = None
    if params["disk_path"]:
        # Absolute first: the parents of a relative path end in '', which never exists.
        path = os.path.abspath(params["disk_path"])
        while not os.path.exists(path):
            path = os.path.dirname(path)
        result["free_mb"] = shutil.disk_usage(path).free // 1048576
    module.exit_json(**result)


if __name__ == "__main__":
    main()
