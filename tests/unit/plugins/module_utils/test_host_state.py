"""needs_write: what host_state_info read compared with what a role wants (content, mode, owner, link, directory)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.llmops.platform.plugins.module_utils.host_state import (  # noqa: E402
    content_sha1,
    needs_write,
    normalize_mode,
)

UNIT = "[Service]\nExecStart=/bin/true\n"
PATH = "/etc/systemd/system/x.service"


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()  # noqa: S324 - the same checksum as the module's


def file_state(content: str = UNIT, mode: str = "0644", owner: str = "root", group: str = "root", **more):
    return {
        PATH: {
            "exists": True,
            "type": "file",
            "mode": mode,
            "owner": owner,
            "group": group,
            "size": len(content.encode()),
            "sha1": sha1(content.encode()),
            **more,
        }
    }


# --- normalize_mode -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "normal"),
    [
        ("0644", "0644"),
        ("644", "0644"),
        ("00644", "0644"),
        (" 0600 ", "0600"),
        (0o644, "0644"),  # YAML 1.1 reads `mode: 0644` as the int 420
        (0o700, "0700"),
        ("1777", "1777"),
        ("0", "0000"),
        (None, None),
    ],
)
def test_normalize_mode(mode, normal):
    assert normalize_mode(mode) == normal


@pytest.mark.parametrize("mode", ["u=rw,go=r", "0648", "", "rw-r--r--", "0x1a4", True])
def test_normalize_mode_refuses_what_is_not_octal(mode):
    with pytest.raises(ValueError, match="octal"):
        normalize_mode(mode)


def test_content_sha1_is_ansibles_checksum_of_the_utf8_bytes():
    assert content_sha1("héllo\n") == sha1("héllo\n".encode())
    assert content_sha1(b"\x00\xff") == sha1(b"\x00\xff")
    assert content_sha1(42) == sha1(b"42")


# --- files ----------------------------------------------------------------------------------------------


def test_missing_path_needs_writing():
    assert needs_write({}, PATH, UNIT, "0644") is True
    assert needs_write(None, PATH, UNIT) is True
    assert needs_write({PATH: {"exists": False}}, PATH, UNIT) is True


def test_same_file_needs_nothing():
    assert needs_write(file_state(), PATH, UNIT, "0644", "root", "root") is False
    assert needs_write(file_state(), PATH, UNIT, 0o644, "root", "root") is False  # int mode
    assert needs_write(file_state(), PATH, UNIT, "644") is False


def test_only_what_is_asked_is_compared():
    assert needs_write(file_state(mode="0600", owner="vllm"), PATH, UNIT) is False
    assert needs_write(file_state(), PATH) is False  # existence only


@pytest.mark.parametrize(
    ("state", "args"),
    [
        (file_state(), (UNIT + "# changed\n", "0644", "root", "root")),
        (file_state(), (UNIT.rstrip("\n"), "0644")),  # a trailing newline is content too
        (file_state(mode="0664"), (UNIT, "0644")),
        (file_state(owner="vllm"), (UNIT, "0644", "root")),
        (file_state(group="vllm"), (UNIT, "0644", "root", "root")),
        ({PATH: {**file_state()[PATH], "type": "directory"}}, (UNIT,)),
        ({PATH: {**file_state()[PATH], "type": "link", "target": "/x"}}, (UNIT,)),
        ({PATH: {k: v for k, v in file_state()[PATH].items() if k != "sha1"}}, (UNIT,)),  # not hashed
    ],
)
def test_a_difference_needs_writing(state, args):
    assert needs_write(state, PATH, *args) is True


# --- links ----------------------------------------------------------------------------------------------


def link_state(target="/opt/vllm/venv-vllm-0.32.0"):
    return {"/opt/vllm/venv": {"exists": True, "type": "link", "target": target, "mode": "0777", "owner": "root"}}


def test_links():
    assert needs_write(link_state(), "/opt/vllm/venv", link="/opt/vllm/venv-vllm-0.32.0") is False
    assert needs_write(link_state(), "/opt/vllm/venv", link="/opt/vllm/venv-vllm-0.33.0") is True
    assert needs_write(link_state(), "/opt/vllm/venv", link="venv-vllm-0.32.0") is True  # targets compare as text
    directory = {"/opt/vllm/venv": {"exists": True, "type": "directory"}}
    assert needs_write(directory, "/opt/vllm/venv", link="/opt/vllm/venv-vllm-0.32.0") is True
    # A link's own mode (always 0777) is not its target's: a wanted mode does not make it differ.
    assert needs_write(link_state(), "/opt/vllm/venv", mode="0755", link="/opt/vllm/venv-vllm-0.32.0") is False


# --- directories ----------------------------------------------------------------------------------------


def dir_state(mode="0700", owner="root", group="root", kind="directory"):
    return {"/etc/vllm": {"exists": True, "type": kind, "mode": mode, "owner": owner, "group": group}}


def test_directories():
    assert needs_write(dir_state(), "/etc/vllm", mode="0700", owner="root", group="root", directory=True) is False
    assert needs_write(dir_state(), "/etc/vllm", mode="700", directory=True) is False
    assert needs_write(dir_state(mode="0755"), "/etc/vllm", mode="0700", directory=True) is True
    assert needs_write(dir_state(owner="vllm"), "/etc/vllm", owner="root", directory=True) is True
    assert needs_write(dir_state(group="vllm"), "/etc/vllm", group="root", directory=True) is True
    assert needs_write(dir_state(kind="file"), "/etc/vllm", directory=True) is True
    assert needs_write(dir_state(kind="link"), "/etc/vllm", directory=True) is True
    assert needs_write({}, "/etc/vllm", directory=True) is True


def test_a_bad_wanted_mode_is_an_error_not_a_difference():
    with pytest.raises(ValueError, match="octal"):
        needs_write(file_state(), PATH, UNIT, "u=rw")
