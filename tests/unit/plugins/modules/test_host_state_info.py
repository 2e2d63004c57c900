"""llmops.platform.host_state_info: main() against a temp dir, real accounts, a fake systemctl.

What the module reads must agree with what needs_write (module_utils/host_state.py) compares: sha1 of the
bytes as hashlib computes it, the mode as four octal digits, link targets as written.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from module_harness import run_main  # noqa: E402

from ansible_collections.llmops.platform.plugins.module_utils.host_state import needs_write  # noqa: E402
from ansible_collections.llmops.platform.plugins.modules import host_state_info  # noqa: E402


def read(params, check_mode=False):
    outcome = run_main(host_state_info.main, dict(params, _ansible_check_mode=check_mode))
    assert not outcome.failed, outcome.result.get("msg")
    assert outcome.result["changed"] is False
    return outcome.result


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir(mode=0o700)
    (tmp_path / "etc").chmod(0o700)
    unit = tmp_path / "etc" / "x.service"
    unit.write_bytes(b"[Service]\nExecStart=/bin/true\n")
    unit.chmod(0o644)
    (tmp_path / "bin.dat").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "bin.dat").chmod(0o600)
    (tmp_path / "venv-1").mkdir()
    (tmp_path / "venv").symlink_to("venv-1")
    (tmp_path / "dangling").symlink_to("/nonexistent/target")
    (tmp_path / "drop.d").mkdir()
    (tmp_path / "vllm@a.service.d").mkdir()
    (tmp_path / "vllm@b.service.d").mkdir()
    os.mkfifo(tmp_path / "fifo")
    return tmp_path


def test_files_links_and_directories_are_described(tree: Path):
    paths = {name: str(tree / name) for name in ("etc", "etc/x.service", "bin.dat", "venv", "dangling", "fifo", "no")}
    files = read({"files": list(paths.values())})["files"]
    me = pwd.getpwuid(os.getuid()).pw_name
    my_group = grp.getgrgid(os.getgid()).gr_name

    unit = files[paths["etc/x.service"]]
    assert unit["exists"] is True and unit["type"] == "file"
    assert unit["sha1"] == hashlib.sha1(b"[Service]\nExecStart=/bin/true\n").hexdigest()  # noqa: S324
    assert unit["mode"] == "0644" and unit["owner"] == me and unit["group"] == my_group
    assert unit["size"] == len(b"[Service]\nExecStart=/bin/true\n")
    assert files[paths["bin.dat"]]["sha1"] == hashlib.sha1(bytes(range(256)) * 10).hexdigest()  # noqa: S324
    assert files[paths["bin.dat"]]["mode"] == "0600"

    assert files[paths["etc"]]["type"] == "directory" and files[paths["etc"]]["mode"] == "0700"
    assert "sha1" not in files[paths["etc"]]
    assert files[paths["venv"]]["type"] == "link" and files[paths["venv"]]["target"] == "venv-1"
    assert files[paths["dangling"]]["type"] == "link" and files[paths["dangling"]]["target"] == "/nonexistent/target"
    assert files[paths["fifo"]]["type"] == "other"
    assert files[paths["no"]] == {"exists": False}


def test_what_it_reads_is_what_needs_write_compares(tree: Path):
    files = read({"files": [str(tree / "etc/x.service"), str(tree / "venv"), str(tree / "etc")]})["files"]
    me = pwd.getpwuid(os.getuid()).pw_name
    unit = "[Service]\nExecStart=/bin/true\n"
    assert needs_write(files, str(tree / "etc/x.service"), unit, "0644", me) is False
    assert needs_write(files, str(tree / "etc/x.service"), unit + "\n", "0644", me) is True
    assert needs_write(files, str(tree / "etc/x.service"), unit, "0600") is True
    assert needs_write(files, str(tree / "venv"), link="venv-1") is False
    assert needs_write(files, str(tree / "etc"), mode="0700", directory=True) is False


def test_large_files_are_described_without_a_hash(tree: Path):
    files = read({"files": [str(tree / "bin.dat")], "max_hash_bytes": 100})["files"]
    assert files[str(tree / "bin.dat")]["size"] == 2560 and "sha1" not in files[str(tree / "bin.dat")]


def test_an_unreadable_file_is_described_without_a_hash(tree: Path, monkeypatch):
    secret = tree / "secret"
    secret.write_text("x")
    real_open = open

    def refusing_open(path, *args, **kwargs):
        if str(path) == str(secret):
            raise PermissionError(13, "Permission denied", str(path))  # what a non-root read of a 0600 file gets
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    files = read({"files": [str(secret)]})["files"]
    assert files[str(secret)]["exists"] is True and files[str(secret)]["type"] == "file"
    assert "sha1" not in files[str(secret)]
    assert needs_write(files, str(secret), "x") is True  # so the role writes it rather than trusting it


def test_contents_of_small_text_files(tree: Path):
    (tree / "install-id").write_text("vllm==0.32.0\nremove=\n")
    big = tree / "big.txt"
    big.write_text("a" * 70000)
    contents = read({"read": [str(tree / "install-id"), str(tree / "missing"), str(tree / "etc"), str(big)]})[
        "contents"
    ]
    assert contents[str(tree / "install-id")] == "vllm==0.32.0\nremove=\n"
    assert contents[str(tree / "missing")] is None
    assert contents[str(tree / "etc")] is None  # a directory has no text
    assert contents[str(big)] == "a" * 65536  # at most 64 KiB


def test_globs_are_sorted_and_empty_when_nothing_matches(tree: Path):
    pattern = str(tree / "vllm@*.service.d")
    none = str(tree / "nothing-*")
    matches = read({"globs": [pattern, none]})["matches"]
    assert matches[pattern] == [str(tree / "vllm@a.service.d"), str(tree / "vllm@b.service.d")]
    assert matches[none] == []


def test_users_and_groups():
    root_group = grp.getgrgid(0).gr_name
    result = read({"users": ["root", "llmops-no-such-user"], "groups": [root_group, "llmops-no-such-group"]})
    assert result["users"] == {"root": True, "llmops-no-such-user": False}
    assert result["groups"] == {root_group: True, "llmops-no-such-group": False}


def test_packages():
    result = read({"packages": ["llmops-no-such-package"]})
    assert result["packages"] == {"llmops-no-such-package": False}
    if shutil.which("dpkg-query"):
        assert read({"packages": ["dpkg", "llmops-no-such-package"]})["packages"] == {
            "dpkg": True,
            "llmops-no-such-package": False,
        }


def test_no_package_manager_means_nothing_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert read({"packages": ["dpkg", "haproxy"]})["packages"] == {"dpkg": False, "haproxy": False}


def fake_systemctl(directory: Path, script: str) -> None:
    tool = directory / "systemctl"
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)


def test_units_without_systemctl_do_not_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no systemctl, no dpkg
    result = read({"units": ["vllm@main.service", "vllm-proxy.service"]})
    assert result["units"] == {}


def test_units_when_systemd_does_not_answer(tmp_path, monkeypatch):
    # A container with systemctl but no systemd: it prints nothing on stdout and fails.
    fake_systemctl(tmp_path, 'echo "System has not been booted with systemd as init system (PID 1)." >&2\nexit 1\n')
    monkeypatch.setenv("PATH", str(tmp_path))
    assert read({"units": ["vllm@main.service", "vllm-proxy.service"]})["units"] == {}


def test_units_are_read_in_one_call(tmp_path, monkeypatch):
    log = tmp_path / "calls"
    fake_systemctl(
        tmp_path,
        f'echo "$@" >> "{log}"\n'
        "cat <<'EOF'\n"
        "Id=vllm@main.service\nLoadState=loaded\nActiveState=active\nSubState=running\n"
        "UnitFileState=enabled\nMainPID=4242\nNRestarts=2\n"
        "\n"
        "Id=vllm-proxy.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\n"
        "UnitFileState=\nMainPID=0\nNRestarts=0\n"
        "EOF\n",
    )
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")  # this systemctl first; cat from the system
    units = read({"units": ["vllm@main.service", "vllm-proxy.service"]})["units"]
    assert units["vllm@main.service"] == {
        "load": "loaded",
        "active": "active",
        "sub": "running",
        "enabled": "enabled",
        "main_pid": 4242,
        "n_restarts": 2,
    }
    assert units["vllm-proxy.service"]["load"] == "not-found" and units["vllm-proxy.service"]["main_pid"] == 0
    calls = log.read_text().splitlines()
    assert (
        len(calls) == 1
        and calls[0].startswith("show --property=")
        and calls[0].endswith("-- vllm@main.service vllm-proxy.service")
    )


def test_system_facts_and_python_version(tmp_path):
    result = read({"python": sys.executable, "disk_path": str(tmp_path / "not" / "yet")})
    assert result["python_version"] == "{}.{}".format(*sys.version_info[:2])
    assert isinstance(result["free_mb"], int) and result["free_mb"] >= 0
    assert isinstance(result["os_family"], str) and result["os_family"]
    assert isinstance(result["service_mgr"], str) and isinstance(result["cpu_flags"], list)
    assert "python_version" not in read({}) and "free_mb" not in read({})


def test_a_python_that_cannot_run_is_null(tmp_path):
    not_executable = tmp_path / "python3"
    not_executable.write_text("")
    assert read({"python": str(tmp_path / "missing" / "python3")})["python_version"] is None
    assert read({"python": str(not_executable)})["python_version"] is None
    assert read({"python": "/bin/false"})["python_version"] is None


def test_a_relative_disk_path_is_measured_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert read({"disk_path": "opt/vllm"})["free_mb"] >= 0


def test_check_mode_reads_the_same(tree: Path):
    params = {"files": [str(tree / "etc/x.service")], "globs": [str(tree / "vllm@*.service.d")]}
    assert read(params, check_mode=True)["files"] == read(params)["files"]
