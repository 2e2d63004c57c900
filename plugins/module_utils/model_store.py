# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The content-addressed model store on a serving host, read and switched in one pass.

Layout (one directory per served model, written by the model_sync role)::

    <path>/versions/<version>/          a verified copy; <version> is the first 16 hex digits of its
                                        content digest, and .llmops-verified holds the whole digest
    <path>/.staging-<version>/          a copy in progress (or cut short), never served
    <path>/current -> versions/<v>      what vLLM serves
    <path>/previous -> versions/<v>     what `current` pointed at before the last switch

`read_store` reports all of it plus the free space for a new version; `prepare` creates the directories
a copy lands in; `install` flushes a verified staging copy to disk, marks it and renames it into
versions/; `switch` repoints `current` (and `previous`) with rename(2) over a fresh symlink, so a reader
sees the old or the new target, never a missing link; `prune` removes the oldest versions beyond a count,
never `current`, `previous` or the version being installed. Standard library only, Python 3.8 compatible.
"""

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

import contextlib
import os
import re
import shutil

MARKER = ".llmops-verified"
STAGING_PREFIX = ".staging-"
VERSION_RE = re.compile(r"^[0-9a-f]{8,64}$")


class StoreError(Exception):
    """A request the store cannot honour; the message says what and where."""


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


def _check_version(version):
    if not VERSION_RE.match(version or ""):
        raise StoreError(f"version must be 8-64 lowercase hex digits, got {version!r}")


def prepare(path, check_mode=False):
    """Create <path>/.. , <path> and <path>/versions as 0755 directories. Returns the paths changed."""
    changed = []
    for directory in (os.path.dirname(path), path, os.path.join(path, "versions")):
        if not os.path.isdir(directory):
            if not check_mode:
                os.makedirs(directory, mode=0o755, exist_ok=True)
                os.chmod(directory, 0o755)  # noqa: S103 - the vLLM service user reads the models
            changed.append(directory)
        elif os.stat(directory).st_mode & 0o7777 != 0o755:
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
    _check_version(version)
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


def read_store(path, version=None, keep=0):
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
    return result


def prunable(versions, keep, protected):
    """Names of the versions beyond the `keep` newest, except the protected ones (0 keeps everything)."""
    if keep <= 0:
        return []
    return [v["name"] for v in versions[keep:] if v["name"] not in protected]


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
    _check_version(version)
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
    return removed
