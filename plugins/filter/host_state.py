# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""needs_write: compare wanted files with what host_state_info read (plugins/module_utils/host_state.py).

Documentation lives next to this file (needs_write.yml).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.module_utils.host_state import needs_write as _needs_write


def needs_write(  # noqa: PLR0917 - a Jinja filter's arguments are positional
    files, path, content=None, mode=None, owner=None, group=None, link=None, directory=False
):
    """True unless the host already has ``path`` as wanted."""
    try:
        return _needs_write(files, path, content, mode, owner, group, link, directory)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"needs_write({path!r}): {exc}") from exc


class FilterModule:
    def filters(self):
        return {"needs_write": needs_write}
