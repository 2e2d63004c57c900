# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The content-addressed model store on a serving host, read and switched in one pass.

Layout (one directory per served model, written by the model_sync role)::

    <path>/versions/<version>/          a verified copy; <version> is the first 16 hex digits of its
                                        content digest, and .llmops-verified holds the whole digest
    <path>/.staging-<version>/          a copy in progress (or cut short), never served
    <path>/current -> versions/<v>      what vLLM serves
    <path>/previous -> versions/<v>     what `current` pointed at before the last switch
    <path>/.llmops-lock                 the run that holds the store (JSON: owner, pid, host, since, info)

`read_store` reports all of it plus the free space for a new version and what pruning would reclaim;
`prepare` creates the directories a copy lands in; `install` flushes a verified staging copy to disk,
marks it and renames it into versions/; `switch` repoints `current` (and `previous`) with rename(2) over a
fresh symlink, so a reader sees the old or the new target, never a missing link; `prune` removes the oldest
versions beyond a count, never `current`, `previous` or the version being installed; `clean_staging`
removes copies left in staging by versions nobody is copying any more.

`acquire_lock`/`release_lock`/`require_lock` keep two playbook runs from interleaving on one store. The lock
outlives the module process (a run holds it across many tasks), so it is a file, not a flock: it appears
with link(2) of a complete record (one winner, never a half-written record), is refreshed by touching its
mtime, and a lock not refreshed for `ttl` seconds is stale and may be taken over. Standard library only,
Python 3.8 compatible.
"""

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import time

MARKER = ".llmops-verified"
STAGING_PREFIX = ".staging-"
LOCK_NAME = ".llmops-lock"
LOCK_POLL_SECONDS = 1.0
VERSION_RE = re.compile(r"^[0-9a-f]{8,64}$")


class StoreError(Exception):
    """A request the store cannot honour; the message says what and where."""


class LockHeld(StoreError):
    """Another run holds the store's lock; `holder` is its record (with age and stale)."""

    def __init__(self, message, holder):
        super().__init__(message)
        self.holder = holder


def _link_version(link):
    """(target, version) of a `current`/`previous` link; version is None unless it points into versions/."""
    if not os.path.islink(link):
        if os.path.exists(link):
            raise StoreError(f"{link} exists but is not a symlink; move it away (model_sync manages this path)")
        return None, None
    target = os.readlink(link)
    parts = target.rstrip("/").split("/")
    if len(parts) == 2 and parts[0] == "versions":
        return target, parts[1]
    return target, None


def _marker_digest(version_dir):
    try:
        with open(os.path.join(version_dir, MARKER), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return None


def staging_dir(path, version):
    return os.path.join(path, STAGING_PREFIX + version)


def check_version(version):
    if not VERSION_RE.match(version or ""):
        raise StoreError(f"version must be 8-64 lowercase hex digits, got {version!r}")


def prepare(path, check_mode=False):
    """Create <path>/.. , <path> and <path>/versions as 0755 directories. Returns the paths changed."""
    return _make_dirs((os.path.dirname(path), path, os.path.join(path, "versions")), check_mode)


def _make_dirs(directories, check_mode, fix_modes=True):
    changed = []
    for directory in directories:
        if not os.path.isdir(directory):
            if not check_mode:
                os.makedirs(directory, mode=0o755, exist_ok=True)
                os.chmod(directory, 0o755)  # noqa: S103 - the vLLM service user reads the models
            changed.append(directory)
        elif fix_modes and os.stat(directory).st_mode & 0o7777 != 0o755:
            if not check_mode:
                os.chmod(directory, 0o755)  # noqa: S103 - the vLLM service user reads the models
            changed.append(directory)
    return changed


def _fsync_path(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install(path, version, digest, check_mode=False):
    """Move the verified staging copy of `version` into versions/, marked with its digest.

    Every file is flushed to disk first, so a host that loses power right after the switch never serves
    a marked version whose data was still in the page cache. Returns True when it installed, False when
    the version was already installed.
    """
    check_version(version)
    if not (digest or "").startswith(version):
        raise StoreError(f"digest {digest!r} does not belong to version {version}")
    target = os.path.join(path, "versions", version)
    staging = staging_dir(path, version)
    if os.path.isdir(target):
        if _marker_digest(target) == digest:
            return False
        raise StoreError(f"{target} exists but is not a verified copy of {digest}; remove it and re-run")
    if not os.path.isdir(staging):
        raise StoreError(f"no staging copy {staging} to install (copy and verify it first)")
    if check_mode:
        return True
    for parent, _dirs, files in os.walk(staging):
        for name in files:
            _fsync_path(os.path.join(parent, name))
        _fsync_path(parent, directory=True)
    marker = os.path.join(staging, MARKER)
    with open(marker, "w", encoding="utf-8") as handle:
        handle.write(digest + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(marker, 0o644)
    os.rename(staging, target)
    _fsync_path(os.path.join(path, "versions"), directory=True)
    return True


def free_bytes(path):
    """Free bytes on the filesystem that holds `path`, or would hold it (nearest existing parent)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    return shutil.disk_usage(probe).free


def _dir_bytes(path):
    total = 0
    for parent, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file rsync just renamed away
                total += os.lstat(os.path.join(parent, name)).st_size
    return total


def read_store(path, version=None, keep=0, record_previous=True, lock_ttl=3600):
    """Everything the role decides on, in one read. Changes nothing."""
    versions_dir = os.path.join(path, "versions")
    versions = []
    if os.path.isdir(versions_dir):
        for name in os.listdir(versions_dir):
            full = os.path.join(versions_dir, name)
            if os.path.islink(full) or not os.path.isdir(full):
                continue
            digest = _marker_digest(full)
            versions.append(
                {
                    "name": name,
                    "verified": bool(digest) and digest.startswith(name),
                    "digest": digest,
                    "mtime": os.stat(full).st_mtime,
                }
            )
    versions.sort(key=lambda v: (v["mtime"], v["name"]), reverse=True)
    current_target, current = _link_version(os.path.join(path, "current"))
    previous_target, previous = _link_version(os.path.join(path, "previous"))
    staging = []
    if os.path.isdir(path):
        staging = sorted(n[len(STAGING_PREFIX) :] for n in os.listdir(path) if n.startswith(STAGING_PREFIX))
    by_name = {v["name"]: v for v in versions}
    result = {
        "path": path,
        "versions": versions,
        "current": current,
        "current_target": current_target,
        "previous": previous,
        "previous_target": previous_target,
        "staging": staging,
        "free_bytes": free_bytes(path),
        "version": version,
        "installed": bool(version) and by_name.get(version, {}).get("verified", False),
        "is_current": bool(version) and current == version,
        "staged_bytes": 0,
        # The copy's receiving end: when it is there, the role skips the package manager.
        "rsync_path": shutil.which("rsync"),
    }
    if version and version in staging:
        result["staged_bytes"] = _dir_bytes(staging_dir(path, version))
    result["prunable"] = prunable(versions, keep, {current, previous, version})
    result["abandoned_staging"] = abandoned_staging(path, version)
    result["abandoned_staging_bytes"] = sum(_dir_bytes(os.path.join(path, n)) for n in result["abandoned_staging"])
    after_install = prunable_after_install(
        versions,
        version,
        keep,
        current=current,
        current_target=current_target,
        previous=previous,
        record_previous=record_previous,
    )
    result["prunable_after_install"] = after_install
    result["prunable_after_install_bytes"] = sum(_dir_bytes(os.path.join(versions_dir, n)) for n in after_install)
    result["reclaimable_bytes"] = result["abandoned_staging_bytes"] + result["prunable_after_install_bytes"]
    result["lock"] = read_lock(path, lock_ttl)
    return result


def prunable(versions, keep, protected):
    """Names of the versions beyond the `keep` newest, except the protected ones (0 keeps everything)."""
    if keep <= 0:
        return []
    return [v["name"] for v in versions[keep:] if v["name"] not in protected]


def previous_after_switch(version, current, current_target, previous, record_previous=True):
    """The version `previous` names once `switch` has made `version` current (what a prune must spare)."""
    if current == version:
        return previous  # no switch, the links stay
    if record_previous and current_target:
        return current  # None when `current` pointed outside versions/
    return previous


def prunable_after_install(versions, version, keep, *, current, current_target, previous, record_previous=True):
    """What installing `version`, switching to it and pruning to `keep` would remove (0 keeps everything).

    The same rule as the prune of a switch: beyond the `keep` newest, sparing `version` and the `previous`
    the switch leaves (the version `current` serves now). A version not installed yet counts as the newest:
    `install` writes its marker into the copy, so the directory it renames into versions/ is modified then.
    """
    if not version or keep <= 0:
        return []
    ordered = list(versions)
    if version not in {v["name"] for v in versions}:
        ordered.insert(0, {"name": version})
    spared = {version, previous_after_switch(version, current, current_target, previous, record_previous)}
    return prunable(ordered, keep, spared)


def abandoned_staging(path, version=None):
    """Names (`.staging-<v>`) of the staging directories other than `version`'s: copies nobody resumes.

    Without `version` every staging directory counts. Links and plain files are left out: the role only
    ever makes directories there, and removing what it did not make is not this module's call.
    """
    if not os.path.isdir(path):
        return []
    own = STAGING_PREFIX + version if version else None
    names = []
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if name.startswith(STAGING_PREFIX) and name != own and os.path.isdir(full) and not os.path.islink(full):
            names.append(name)
    return sorted(names)


def clean_staging(path, version, check_mode=False):
    """Remove the abandoned staging directories (never `version`'s, which a copy may be resuming)."""
    check_version(version)
    removed = abandoned_staging(path, version)
    if removed and not check_mode:
        for name in removed:
            shutil.rmtree(os.path.join(path, name))
        # The removals are what made room for the next copy; a power cut must not bring them back.
        _fsync_path(path, directory=True)
    return removed


def _replace_link(path, name, target):
    link = os.path.join(path, name)
    tmp = os.path.join(path, f".{name}.llmops-{os.getpid()}")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except OSError:
        os.unlink(tmp)
        raise


def switch(path, version, record_previous=True, check_mode=False):
    """Point `current` at versions/<version>; `previous` keeps what `current` pointed at (when it did).

    Returns (changed, old_target). Refuses a version that is not installed and verified.
    """
    check_version(version)
    version_dir = os.path.join(path, "versions", version)
    digest = _marker_digest(version_dir) if os.path.isdir(version_dir) else None
    if not digest or not digest.startswith(version):
        raise StoreError(
            f"version {version} is not installed and verified under {path}/versions "
            f"(no {MARKER} naming it); nothing was switched"
        )
    old_target, old = _link_version(os.path.join(path, "current"))
    new_target = f"versions/{version}"
    if old == version:
        return False, old_target
    if not check_mode:
        if record_previous and old_target:
            _replace_link(path, "previous", old_target)
        _replace_link(path, "current", new_target)
        # rename(2) is atomic but not durable until the directory holding the links is flushed: without
        # this a power cut can bring back the old `current` after the play reported (and reloaded) the new.
        _fsync_path(path, directory=True)
    return True, old_target


def prune(path, names, check_mode=False):
    """Remove the named version directories (names come from `prunable`)."""
    removed = []
    for name in names:
        full = os.path.join(path, "versions", name)
        if os.path.isdir(full) and not os.path.islink(full):
            if not check_mode:
                shutil.rmtree(full)
            removed.append(name)
    if removed and not check_mode:
        # Space reclaimed for the next copy stays reclaimed, and a pruned version never comes back half-there.
        _fsync_path(os.path.join(path, "versions"), directory=True)
    return removed


# The lock. Every read-decide-write step on it runs under _guard, so two module runs on the host never both
# see a stale lock and both take it over; link(2) and rename(2) keep it whole where the guard is unavailable.


def lock_file(path):
    return os.path.join(path, LOCK_NAME)


def read_lock(path, ttl):
    """The lock record plus `age` (seconds since its last refresh) and `stale` (older than `ttl`), or None."""
    name = lock_file(path)
    try:
        mtime = os.stat(name).st_mtime
        with open(name, encoding="utf-8") as handle:
            text = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        record = {"owner": None}  # unreadable: held by nobody we can name, until it goes stale
    age = max(0.0, time.time() - mtime)
    return dict(record, age=int(age), stale=age > ttl)


def _record(owner, info):
    record = {
        "owner": owner,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": int(time.time()),
        "info": dict(info or {}),
    }
    # As it reads back from the file (what is not JSON becomes text), so a takeover can recognise its own.
    return json.loads(json.dumps(record, default=str))


def _held(view):
    """The record as stored (without the age and stale that read_lock adds)."""
    return {k: v for k, v in view.items() if k not in ("age", "stale")}


@contextlib.contextmanager
def _guard(path):
    """Serialise the lock's read-decide-write steps among processes on this host.

    flock(2) on the store directory: held for microseconds, and the kernel drops it when a process dies, so
    it can never be left behind. Where it cannot be had (a directory that does not exist yet, a network
    filesystem without flock), the step runs unguarded: link(2) still makes one winner of a free lock.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        fd = None
    try:
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # drops the flock


def _write_temp_record(path, record):
    tmp = os.path.join(path, f"{LOCK_NAME}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(record, handle, sort_keys=True)
        handle.write("\n")
    return tmp


def _create_lock(path, record):
    """Take a free lock: link(2) a complete record to the lock name. False when someone else was first."""
    tmp = _write_temp_record(path, record)
    try:
        os.link(tmp, lock_file(path))
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def _take_over(path, record):
    """Replace the stale lock (judged under the guard just now) with `record`; True when ours stuck."""
    tmp = _write_temp_record(path, record)
    try:
        os.rename(tmp, lock_file(path))
    except OSError:
        os.unlink(tmp)
        raise
    # Re-read: had a run without the guard replaced it between our rename and now, it is theirs.
    now = read_lock(path, float("inf"))
    return now is not None and _held(now) == record


def _utc(epoch):
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(epoch)))
    except (TypeError, ValueError, OverflowError):
        return "an unknown time"


def describe_holder(view):
    """`run X (host h, pid p, since <ISO UTC>, N s ago; key=value ...)`, for messages that name the holder."""
    if view.get("owner") is None:
        return f"an unreadable lock record (last refreshed {view['age']} s ago)"
    since = view.get("since")
    ago = f", {int(time.time() - since)} s ago" if isinstance(since, (int, float)) else ""
    details = f"host {view.get('host')}, pid {view.get('pid')}, since {_utc(since)}{ago}"
    info = view.get("info")
    if isinstance(info, dict) and info:
        details += "; " + " ".join(f"{k}={v}" for k, v in sorted(info.items()))
    return f"run {view['owner']} ({details})"


def _held_message(path, view, ttl, waited, timeout):
    expires = max(0, ttl - view["age"])
    return (
        f"model store {path} is locked by {describe_holder(view)}; waited {int(waited)} s "
        f"(lock_timeout={timeout}). Wait for that run, or if it is dead remove {lock_file(path)}; "
        f"it also expires {ttl} s after its last refresh (in {expires} s)."
    )


def acquire_lock(path, owner, *, info=None, timeout=0, ttl=3600, check_mode=False):
    """Take the store's lock for `owner`, waiting up to `timeout` seconds for another run to let go.

    Returns a dict: `changed` (taken now, or would be in check mode), `lock` (the record held, with age and
    stale), `waited` (seconds), `taken_over_from` (the stale record replaced, or None) and `created` (the
    directories made for it). Our own lock is refreshed (re-entrant, not a change). Raises LockHeld when
    another live run still holds it after `timeout`. In check mode nothing is written.
    """
    created = _make_dirs((os.path.dirname(path), path), check_mode, fix_modes=False)
    record = _record(owner, info)
    fresh = dict(record, age=0, stale=False)
    started = time.monotonic()
    while True:
        waited = time.monotonic() - started
        with _guard(path):
            held = read_lock(path, ttl)
            if held is None:
                if check_mode or _create_lock(path, record):
                    return {"changed": True, "lock": fresh, "waited": waited, "taken_over_from": None,
                            "created": created}  # fmt: skip
                continue  # another run (without the guard) was first: look at its lock
            if held.get("owner") == owner:
                if not check_mode:
                    os.utime(lock_file(path))
                    held = dict(held, age=0, stale=False)
                return {"changed": False, "lock": held, "waited": waited, "taken_over_from": None,
                        "created": created}  # fmt: skip
            if held["stale"] and (check_mode or _take_over(path, record)):
                return {"changed": True, "lock": fresh, "waited": waited, "taken_over_from": held,
                        "created": created}  # fmt: skip
        if held["stale"]:
            continue  # lost the takeover to another run: look at the lock it holds now
        if waited >= timeout:
            raise LockHeld(_held_message(path, held, ttl, waited, timeout), held)
        time.sleep(min(LOCK_POLL_SECONDS, timeout - waited))


def require_lock(path, owner, ttl=3600, check_mode=False):
    """Before a change: `owner` must hold the lock; refresh it. Returns the lock (with age and stale).

    In check mode the run took no lock (`locked` wrote nothing), so a free or stale lock is enough: only
    another live run holding it stops a check-mode run, as it would stop the real one.
    """
    with _guard(path):
        held = read_lock(path, ttl)
        if held is not None and held.get("owner") == owner:
            if not check_mode:
                os.utime(lock_file(path))
                held = dict(held, age=0, stale=False)
            return held
        if check_mode and (held is None or held["stale"]):
            return held
    if held is None:
        raise StoreError(f"model store {path} is not locked by this run ({owner}); take the lock first (state=locked)")
    raise LockHeld(
        f"model store {path} is locked by {describe_holder(held)}, not by this run ({owner}); "
        "take the lock first (state=locked)",
        held,
    )


def release_lock(path, owner, ttl=3600, check_mode=False):
    """Remove the lock if `owner` holds it. Returns (changed, the lock before, a warning or None).

    Another run's lock is left alone, stale or not: releasing is for the holder, and a stale lock is
    taken over by the next `locked`.
    """
    with _guard(path):
        held = read_lock(path, ttl)
        if held is None:
            return False, None, None
        if held.get("owner") != owner:
            warning = (
                f"model store {path} is locked by {describe_holder(held)}, not by this run ({owner}); left it in place"
            )
            return False, held, warning
        if not check_mode:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_file(path))
        return True, held, None
