# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compare what a role wants on a host with what llmops.platform.host_state_info read there.

``needs_write`` answers on the controller whether a file, directory or link must be written, so a role
runs a writing task (with its diff and check mode) only for what differs, and an unchanged re-run costs
one read of the host. Standard library only, Python 3.8 compatible.
"""

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

import hashlib
from typing import Any, Dict, Optional


def normalize_mode(mode: Any) -> Optional[str]:
    """'0644', '644', 0o644 (an int from YAML) -> '0644'; None stays None."""
    if mode is None:
        return None
    if isinstance(mode, int) and not isinstance(mode, bool):
        return f"{mode:04o}"
    text = str(mode).strip()
    if not text or any(c not in "01234567" for c in text):
        raise ValueError(f"mode must be octal digits such as '0644', got {mode!r}")
    return f"{int(text, 8):04o}"


def content_sha1(content: Any) -> str:
    data = content if isinstance(content, bytes) else str(content).encode("utf-8")
    return hashlib.sha1(data).hexdigest()  # noqa: S324 - Ansible's own checksum, not a security use


def needs_write(  # noqa: PLR0917 - called as a Jinja filter, with positional arguments
    files: Dict[str, Any],
    path: str,
    content: Any = None,
    mode: Any = None,
    owner: Optional[str] = None,
    group: Optional[str] = None,
    link: Optional[str] = None,
    directory: bool = False,
) -> bool:
    """True unless ``path`` (as host_state_info described it in ``files``) already is what is wanted."""
    state = (files or {}).get(path) or {}
    if not state.get("exists"):
        return True
    if directory:
        if state.get("type") != "directory":
            return True
    elif link is not None:
        return state.get("type") != "link" or state.get("target") != link
    else:
        if state.get("type") != "file":
            return True
        if content is not None and state.get("sha1") != content_sha1(content):
            return True
    wanted_mode = normalize_mode(mode)
    if wanted_mode is not None and state.get("mode") != wanted_mode:
        return True
    if owner is not None and state.get("owner") != owner:
        return True
    return group is not None and state.get("group") != group
