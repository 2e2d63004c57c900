"""Run a module's main() in-process: exit_json/fail_json become a ModuleExit carrying the result.

Shared by the module tests of this folder (its conftest.py puts the folder on sys.path).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class ModuleExit(Exception):
    def __init__(self, result: Dict[str, Any], failed: bool) -> None:
        super().__init__(result)
        self.result = result
        self.failed = failed


def _exit_json(self, **kwargs):
    raise ModuleExit(kwargs, failed=False)


def _fail_json(self, msg, **kwargs):
    raise ModuleExit(dict(kwargs, msg=msg), failed=True)


@contextlib.contextmanager
def patched(params: Dict[str, Any], **more: Callable) -> Iterator[None]:
    """Module arguments set and exit/fail (plus any AnsibleModule method in `more`) patched."""
    with patch_module_args(params), mock.patch.multiple(
        basic.AnsibleModule, exit_json=_exit_json, fail_json=_fail_json, **more
    ):
        yield


def run_main(
    main: Callable[[], None], params: Dict[str, Any], warnings: Optional[List[str]] = None, **more
) -> ModuleExit:
    """main() with `params`; returns the ModuleExit (result and whether it failed)."""
    if warnings is not None:
        more["warn"] = lambda self, w: warnings.append(w)
    with patched(params, **more), pytest.raises(ModuleExit) as info:
        main()
    return info.value
