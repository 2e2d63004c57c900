# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The value checks the one-pass variable plans share (vllm_host_plan.py, model_sync_plan.py, k8s_plan.py).

Each plan raises its own error class, whose message starts with the variable's name
(``vllm_host_port: must be an integer, got str 'http'``). ``ValueChecks(ErrorClass)`` holds the checks
that raise it; a plan module binds them to its own names::

    _CHECKS = ValueChecks(HostPlanError, integral_floats=True)
    _fail, _as_int, _text = _CHECKS.fail, _CHECKS.as_int, _CHECKS.text

Standard library only, Python 3.8 compatible: the filters run on the controller.
"""

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

import math
import re
from typing import Any, Iterable, Optional, Type

# A URL that carries user:password@ (or a token@) before its host.
URL_CREDENTIALS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*@")
HOSTNAME_RE = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)
_INT_STRING_RE = re.compile(r"^\s*[+-]?[0-9]+\s*\Z")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def type_name(value: Any) -> str:
    """``str`` for Ansible's tagged ``_AnsibleTaggedStr`` too: the builtin type a user would recognize."""
    for cls in type(value).__mro__:
        if cls.__module__ == "builtins" and cls is not object:
            return cls.__name__
    return type(value).__name__


def has_control(text: str) -> bool:
    """Whether the text holds a control character (a newline, a tab, DEL, ...)."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def within(path: str, parent: str) -> bool:
    """The same path, or one below ``parent`` (lexically: normalize both first)."""
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def item(where: str, key: Any) -> str:
    """How a failure names one entry of a mapping: where.key, or where['odd key'] for a key that is not plain."""
    if isinstance(key, str) and re.match(r"^[A-Za-z0-9_./-]+\Z", key):
        return f"{where}.{key}"
    return f"{where}[{key!r}]"


class ValueChecks:
    """The shared checks, raising ``error`` with messages that start with the variable's name.

    ``integral_floats``: ``as_int`` takes a float without a fraction (8000.0) too.
    ``blank_is_empty``: ``text`` with ``allow_empty`` false refuses a string of spaces too.
    """

    def __init__(self, error: Type[ValueError], *, integral_floats: bool = False, blank_is_empty: bool = False):
        self.error = error
        self.integral_floats = integral_floats
        self.blank_is_empty = blank_is_empty

    def fail(self, where: str, message: str) -> None:
        raise self.error(f"{where}: {message}")

    def as_int(
        self, value: Any, where: str, minimum: Optional[int] = None, maximum: Optional[int] = None, strict: bool = False
    ) -> int:
        """An integer; with ``strict`` false an integer string counts too (YAML quotes, ``-e name=1`` gives
        ``'1'``). Booleans are mistakes, not 0/1."""
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif not strict and (
            (isinstance(value, str) and _INT_STRING_RE.match(value))
            or (self.integral_floats and isinstance(value, float) and value.is_integer())
        ):
            number = int(value)
        if number is None:
            hint = " (unquoted: the templates use it as a number)" if strict and isinstance(value, str) else ""
            self.fail(where, f"must be an integer{hint}, got {type_name(value)} {value!r}")
        if minimum is not None and number < minimum:
            self.fail(where, f"must be at least {minimum}, got {number}")
        if maximum is not None and number > maximum:
            self.fail(where, f"must be at most {maximum}, got {number}")
        return number  # type: ignore[return-value]

    def as_float(self, value: Any, where: str) -> float:
        """A finite number, or a string that reads as one."""
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is None or math.isnan(number) or math.isinf(number):
            self.fail(where, f"must be a number, got {type_name(value)} {value!r}")
        return number  # type: ignore[return-value]

    def as_bool(self, value: Any, where: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        self.fail(where, f"must be a boolean, got {type_name(value)} {value!r}")
        return False  # pragma: no cover

    def as_list(self, value: Any, where: str) -> list:
        if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
            self.fail(where, f"must be a list, got {type_name(value)} {value!r}")
        return list(value)

    def as_mapping(self, value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            self.fail(where, f"must be a mapping, got {type_name(value)} {value!r}")
        return dict(value)

    def text(self, value: Any, where: str, allow_empty: bool = True, echo: bool = True) -> str:
        """A string without control characters; with echo false the value never appears in the message."""
        if not isinstance(value, str):
            self.fail(where, f"must be a string, got {type_name(value)}" + (f" {value!r}" if echo else ""))
        if not allow_empty and not (value.strip() if self.blank_is_empty else value):
            self.fail(where, "must not be empty")
        if has_control(value):
            shown = f", got {value!r}" if echo else ""
            self.fail(where, f"must not contain control characters (newlines, tabs, ...){shown}")
        return value

    def choice(self, value: Any, where: str, choices: Iterable[str]) -> str:
        options = tuple(choices)
        if not isinstance(value, str) or value not in options:
            self.fail(where, "must be one of {}, got {!r}".format(", ".join(options), value))
        return value
