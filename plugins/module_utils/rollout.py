# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Planning a rollout over many hosts: batch size, copy fan-out, copy chunks and progress text.

* `rollout_batch` finds the `serial:` value every host of a group agrees on. Ansible templates a play's
  `serial` before any host is selected, so group_vars only reach it through `hostvars` (which Ansible
  creates when the first play of a run starts: the first play itself cannot use it).
* `fanout_plan` plans a tree copy: each round, every host that already holds the model (a seed, or a host
  that received it in an earlier round) sends it to at most `fanout` others; the controller sends one
  copy in all, and only when no host holds the model yet.
* `copy_chunks` groups a model manifest's files into chunks for a copy loop, and `copy_progress` renders
  the loop label shown after each chunk.

Standard library only, no Ansible imports, Python 3.8 compatible: the filters in plugins/filter/rollout.py
wrap these functions and turn ValueError into AnsibleFilterError. Ansible hands filters tagged subclasses
of str and int (data tagging in ansible-core 2.19); every value is tested with isinstance and copied out
as a plain str or int.
"""

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

import json
import math
import re
import time
from collections.abc import Iterable
from typing import Any, Dict, List, Optional, Tuple

ROLLOUT_BATCH_VARIABLE = "llmops_rollout_batch"
DEFAULT_BATCH = "100%"
DEFAULT_CONTROLLER = "controller"

# Hosts named per value in a message before "and N more".
MAX_HOSTS_NAMED = 10

BATCH_RULE = 'a positive integer, a percentage from "1%" to "100%", or a non-empty list of those'

_DIGITS = re.compile(r"^[0-9]+$")
_PERCENT = re.compile(r"^([0-9]+)%$")


def _show(value: Any) -> str:
    """A value as it would be written in YAML/JSON (strings quoted), for messages."""
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


def _show_batch(value: Any) -> str:
    """A normalised batch value: 2, 50%, [1, "25%"]."""
    return value if isinstance(value, str) else _show(value)


def _name_hosts(hosts: List[str]) -> str:
    if len(hosts) <= MAX_HOSTS_NAMED:
        return ", ".join(hosts)
    return f"{', '.join(hosts[:MAX_HOSTS_NAMED])} and {len(hosts) - MAX_HOSTS_NAMED} more"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _host_list(hosts: Any, what: str) -> List[str]:
    """A list of host names (plain str), in order, without duplicates. None is an empty list."""
    if hosts is None:
        return []
    if isinstance(hosts, (str, bytes, dict)) or not isinstance(hosts, Iterable):
        raise ValueError(f"{what} must be a list of host names, got {type(hosts).__name__} {_show(hosts)}")
    names = []  # type: List[str]
    seen = set()
    for host in hosts:
        if not isinstance(host, str) or not host:
            raise ValueError(f"{what} must be a list of host names, got the item {_show(host)}")
        name = str(host)
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


# -- rollout_batch ---------------------------------------------------------------------------------


def _batch_item(value: Any) -> Optional[Any]:
    """One serial item as a plain int or "N%" string, or None when it is not valid."""
    if _is_int(value):
        return int(value) if value > 0 else None
    if isinstance(value, str):
        text = str(value).strip()
        if _DIGITS.match(text):
            number = int(text)
            return number if number > 0 else None
        match = _PERCENT.match(text)
        if match:
            percent = int(match.group(1))
            return f"{percent}%" if 1 <= percent <= 100 else None
    return None


def normalize_batch(value: Any) -> Optional[Any]:
    """A valid `serial:` value normalised (digit strings to int, "050%" to "50%", a list to a list of
    those), or None when it is not valid (0, negative, "0%", "150%", "latest", a bool, a float, an empty
    list, a nested list, ...)."""
    if isinstance(value, (list, tuple)):
        items = [_batch_item(item) for item in value]
        if not items or any(item is None for item in items):
            return None
        return items
    return _batch_item(value)


def _batch_key(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def rollout_batch(
    hosts: Any,
    hostvars: Any,
    variable: str = ROLLOUT_BATCH_VARIABLE,
    default: Any = DEFAULT_BATCH,
) -> Any:
    """The `serial:` value set by `variable` that every host of `hosts` agrees on.

    `hostvars` maps a host name to that host's variables (Ansible's `hostvars`, or a dict of dicts). A
    host without the variable, or with it set to null, counts as `default`. Returns an int, an "N%"
    string, or a list of those; `default` when `hosts` is empty. Raises ValueError naming the variable
    and the hosts when a value is invalid, a host is not in `hostvars`, or the hosts disagree.
    """
    if not isinstance(variable, str) or not variable:
        raise ValueError(f"variable must be a variable name, got {_show(variable)}")
    variable = str(variable)
    normal_default = normalize_batch(default)
    if normal_default is None:
        raise ValueError(f"the default of {variable} must be {BATCH_RULE}, got {_show(default)}")
    names = _host_list(hosts, "hosts")

    if names and (hostvars is None or not hasattr(hostvars, "__contains__") or not len(hostvars)):
        raise ValueError(
            f"cannot read {variable}: hostvars is empty. Ansible creates hostvars when the first play of a run "
            "starts, so the serial keyword of the first play cannot read it: run any play before this one "
            "(hosts: localhost, gather_facts: false, tasks: [] will do)"
        )
    unknown = [h for h in names if h not in hostvars]
    if unknown:
        raise ValueError(f"cannot read {variable}: {_name_hosts(unknown)} not in hostvars")

    invalid = []  # type: List[Tuple[str, List[str]]]  # shown value, hosts
    groups = []  # type: List[Tuple[Any, List[str], List[bool]]]  # value, hosts, whether each is unset
    for host in names:
        host_vars = hostvars[host]
        raw = host_vars.get(variable) if hasattr(host_vars, "get") else None
        unset = raw is None
        value = normal_default if unset else normalize_batch(raw)
        if value is None:
            shown = _show(raw)
            for entry in invalid:
                if entry[0] == shown:
                    entry[1].append(host)
                    break
            else:
                invalid.append((shown, [host]))
            continue
        key = _batch_key(value)
        for group in groups:
            if _batch_key(group[0]) == key:
                group[1].append(host)
                group[2].append(unset)
                break
        else:
            groups.append((value, [host], [unset]))

    if invalid:
        got = "; ".join(f"{shown} on {_name_hosts(on)}" for shown, on in invalid)
        raise ValueError(f"{variable} must be {BATCH_RULE}; got {got}")
    if not groups:
        return normal_default
    if len(groups) > 1:
        parts = []
        for value, on, unset in groups:
            label = _show_batch(value)
            if all(unset):
                label += " (unset, the default)"
            parts.append(f"{label} on {_name_hosts(on)}")
        raise ValueError(f"{variable} differs between hosts: {'; '.join(parts)} — set it once for the group")
    return groups[0][0]


# -- fanout_plan -----------------------------------------------------------------------------------


def _positive_int(value: Any, what: str) -> int:
    if _is_int(value):
        number = int(value)
    elif isinstance(value, str) and _DIGITS.match(str(value).strip()):
        number = int(str(value).strip())
    else:
        raise ValueError(f"{what} must be a positive integer, got {_show(value)}")
    if number < 1:
        raise ValueError(f"{what} must be a positive integer, got {_show(value)}")
    return number


def fanout_plan(
    targets: Any,
    seeds: Any,
    fanout: Any = 1,
    controller: str = DEFAULT_CONTROLLER,
) -> List[List[Dict[str, str]]]:
    """Rounds of a tree copy of `targets` from `seeds` (hosts that already hold the verified copy).

    Each round is a list of {"target": host, "source": host}, in the order of `targets`. Sources are the
    seeds, then the targets in the order they received the copy; within a round they are taken round-robin,
    each serving at most `fanout` targets, so every round uses every available source evenly. Without
    seeds the first round is the single copy `controller` -> first target. Targets already in seeds and
    repeated targets are left out; no targets left gives [].
    """
    wanted = _host_list(targets, "targets")
    holders = _host_list(seeds, "seeds")
    per_source = _positive_int(fanout, "fanout")
    if not isinstance(controller, str) or not controller:
        raise ValueError(f"controller must be a non-empty name, got {_show(controller)}")
    controller = str(controller)

    held = set(holders)
    pending = [t for t in wanted if t not in held]
    if not pending:
        return []

    rounds = []  # type: List[List[Dict[str, str]]]
    sources = list(holders)
    if not sources:
        first = pending.pop(0)
        if first == controller:
            raise ValueError(f"the controller {controller!r} cannot be a target: it would copy to itself")
        rounds.append([{"target": first, "source": controller}])
        sources.append(first)
    while pending:
        batch, pending = pending[: len(sources) * per_source], pending[len(sources) * per_source :]
        rounds.append([{"target": t, "source": sources[i % len(sources)]} for i, t in enumerate(batch)])
        sources.extend(batch)
    return rounds


# -- copy_chunks -----------------------------------------------------------------------------------


def _manifest_entries(files: Any) -> List[Tuple[str, int]]:
    """(path, size) of every file of a manifest, sorted by path.

    Accepts the model_manifest module's `manifest` list ({path, size, ...} dicts), a dict holding it under
    `manifest` (a registered result or a cache file) or `files`, or a mapping path -> size or
    path -> {size, ...}.
    """
    if isinstance(files, dict):
        for key in ("manifest", "files"):
            if isinstance(files.get(key), list):
                files = files[key]
                break
    pairs = []  # type: List[Tuple[Any, Any, str]]  # path, size, where
    if isinstance(files, dict):
        for path, info in files.items():
            size = info.get("size") if isinstance(info, dict) else info
            pairs.append((path, size, f"file {_show(path)}"))
    elif isinstance(files, (list, tuple)):
        for i, entry in enumerate(files):
            if not isinstance(entry, dict) or "path" not in entry or "size" not in entry:
                raise ValueError(f"manifest entry {i} must be a dict with path and size, got {_show(entry)}")
            pairs.append((entry["path"], entry["size"], f"manifest entry {i}"))
    else:
        raise ValueError(
            "files must be a manifest: a list of {path, size} entries, a dict holding one under 'manifest' or "
            f"'files', or a mapping path -> size; got {type(files).__name__}"
        )

    entries = []  # type: List[Tuple[str, int]]
    seen = set()
    for path, size, where in pairs:
        if not isinstance(path, str) or not path:
            raise ValueError(f"{where}: path must be a non-empty string, got {_show(path)}")
        if not _is_int(size) or size < 0:
            raise ValueError(f"{where} ({path}): size must be a non-negative integer, got {_show(size)}")
        if path in seen:
            raise ValueError(f"{where}: {path} is listed twice")
        seen.add(path)
        entries.append((str(path), int(size)))
    entries.sort()
    return entries


def copy_chunks(files: Any, chunk_bytes: Any) -> List[Dict[str, Any]]:
    """The manifest's files, sorted by path, in chunks of about `chunk_bytes`.

    A file is never split. A chunk closes once it holds `chunk_bytes` or more, and a file that would take
    a non-empty chunk past `chunk_bytes` starts the next one, so a chunk is larger than `chunk_bytes` only
    when it is a single file. `chunk_bytes` <= 0 puts everything into one chunk; no files give [].

    Each chunk: index (from 1), count (chunks in all), paths, bytes, done_before (bytes of the earlier
    chunks) and total (bytes of all files).
    """
    if _is_int(chunk_bytes):
        limit = int(chunk_bytes)
    elif isinstance(chunk_bytes, str) and re.match(r"^-?[0-9]+$", str(chunk_bytes).strip()):
        limit = int(str(chunk_bytes).strip())
    else:
        raise ValueError(f"chunk_bytes must be an integer number of bytes, got {_show(chunk_bytes)}")
    entries = _manifest_entries(files)
    if not entries:
        return []

    groups = []  # type: List[Tuple[List[str], int]]
    paths = []  # type: List[str]
    size = 0
    for path, file_size in entries:
        if limit > 0 and paths and size + file_size > limit:
            groups.append((paths, size))
            paths, size = [], 0
        paths.append(path)
        size += file_size
        if limit > 0 and size >= limit:
            groups.append((paths, size))
            paths, size = [], 0
    if paths:
        groups.append((paths, size))

    total = sum(file_size for _path, file_size in entries)
    chunks = []  # type: List[Dict[str, Any]]
    done = 0
    for index, (chunk_paths, chunk_size) in enumerate(groups, 1):
        chunks.append(
            {
                "index": index,
                "count": len(groups),
                "paths": chunk_paths,
                "bytes": chunk_size,
                "done_before": done,
                "total": total,
            }
        )
        done += chunk_size
    return chunks


# -- copy_progress ---------------------------------------------------------------------------------

SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def _size_unit(total: int) -> Tuple[str, int]:
    """The largest binary unit (up to TiB) that `total` reaches, and its size in bytes."""
    power = 0
    while power < len(SIZE_UNITS) - 1 and total >= 1024 ** (power + 1):
        power += 1
    return SIZE_UNITS[power], 1024**power


def format_size_pair(done: int, total: int) -> str:
    """Like "14.6 of 58.2 GiB": both in the unit of the total, one decimal (whole bytes below 1 KiB)."""
    unit, scale = _size_unit(total)
    if scale == 1:
        return f"{done} of {total} B"
    return f"{done / scale:.1f} of {total / scale:.1f} {unit}"


def format_rate(bytes_per_second: float) -> str:
    """Decimal megabytes per second: "412 MB/s", "3.4 MB/s", "0.05 MB/s"."""
    mb = bytes_per_second / 1e6
    if mb >= 10:
        return f"{mb:.0f} MB/s"
    if mb >= 1:
        return f"{mb:.1f} MB/s"
    return f"{mb:.2f} MB/s"


def format_duration(seconds: float) -> str:
    """Like "46 s", "1 min 46 s", "2 h 5 min" (rounded to the second; under an hour shows seconds)."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, rest = divmod(whole, 3600)
    minutes = rest // 60
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _epoch(value: Any, what: str) -> float:
    """Seconds since the epoch from a number, a numeric string or a datetime."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be seconds since the epoch, got {_show(value)}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(str(value).strip())
        except ValueError:
            raise ValueError(f"{what} must be seconds since the epoch, got {_show(value)}") from None
    elif callable(getattr(value, "timestamp", None)):
        number = float(value.timestamp())
    else:
        raise ValueError(f"{what} must be seconds since the epoch, got {_show(value)}")
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"{what} must be seconds since the epoch, got {_show(value)}")
    return number


def copy_progress(chunk: Any, started_at: Any, now: Any = None) -> str:
    """The loop label after `chunk` (from copy_chunks) is copied.

    "chunk 3/12: 14.6 of 58.2 GiB (25%), 412 MB/s, about 1 min 54 s left"; after the last chunk
    "..., done in 2 min 21 s". The rate is the bytes of this and the earlier chunks over the time since
    `started_at` (seconds since the epoch) until `now` (default: the current time); rate and time are left
    out while no time has passed or less than 1% was copied.
    """
    if not isinstance(chunk, dict):
        raise ValueError(f"chunk must be a dict from copy_chunks, got {type(chunk).__name__}")
    numbers = {}  # type: Dict[str, int]
    for key in ("index", "count", "bytes", "done_before", "total"):
        value = chunk.get(key)
        if not _is_int(value) or value < 0:
            raise ValueError(f"chunk {key} must be a non-negative integer, got {_show(value)}")
        numbers[key] = int(value)
    start = _epoch(started_at, "started_at")
    end = time.time() if now is None else _epoch(now, "now")

    total = numbers["total"]
    done = min(numbers["done_before"] + numbers["bytes"], total) if total else 0
    percent = 100 if total == 0 else done * 100 // total
    text = f"chunk {numbers['index']}/{numbers['count']}: {format_size_pair(done, total)} ({percent}%)"

    elapsed = end - start
    # Under 1% done (the small config files go first) a rate says nothing and the time left is absurd.
    if elapsed <= 0 or done <= 0 or (done < total and done * 100 < total):
        return text
    rate = done / elapsed
    text += f", {format_rate(rate)}"
    if done >= total:
        return text + f", done in {format_duration(elapsed)}"
    left = max(1.0, (total - done) / rate)
    return text + f", about {format_duration(left)} left"
