# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The merge Job's command: a versioned merge on the shared volume (the in-cluster twin of model_sync's
versions on the serving hosts).

    python3 model-version.py --config /config/merge.yaml --versions-dir /storage/models/merged-model-versions \
        --version 20261130T211530Z --link /storage/models/merged-model --keep 3 --protect <served> ... \
        -- llamafactory-cli export

1. Runs the export command with a copy of the merge config whose export_dir is <versions-dir>/<version>.part
   (a new, empty directory: a merge never writes into a version that exists or is served).
2. Checks the result with model_manifest (the collection's plugins/module_utils/model_manifest.py, mounted
   next to this script): config.json, tokenizer, every safetensors header against its file. A model that
   fails the check is removed and the Job fails, naming the files.
3. Writes the manifest (<version>/.llmops-manifest.json, the same cache format model_manifest reads on the
   hosts), renames <version>.part to <version> (a version directory is complete or absent), and points
   --link (the ADR's /storage/models/merged-model, what the external layout syncs from) at it.
4. Prunes: keeps the newest --keep versions plus every --protect version (the served and the previous one,
   from vllm_k8s's model record); unfinished *.part directories of earlier runs go too.
5. Prints one line `LLMOPS_MODEL_VERSION {"version": ..., "path": ..., "digest": ...}` that the role reads
   from the pod's log.
Standard library only, plus PyYAML (a LLaMA-Factory dependency) to rewrite the config.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import yaml  # a LLaMA-Factory dependency: the merge Job runs in its image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import model_manifest  # mounted next to this script from the same ConfigMap

VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
MARK = "LLMOPS_MODEL_VERSION"


def log(message: str) -> None:
    print(f"[model-version] {message}", flush=True)


def versions(root: str) -> list:
    """Finished versions under root, newest first (by the manifest's mtime, then name)."""
    found = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        path = os.path.join(root, name)
        manifest = os.path.join(path, ".llmops-manifest.json")
        if name.endswith(".part") or not os.path.isdir(path) or os.path.islink(path):
            continue
        stamp = os.stat(manifest).st_mtime if os.path.exists(manifest) else os.stat(path).st_mtime
        found.append((stamp, name))
    return [name for _stamp, name in sorted(found, reverse=True)]


def prune(root: str, keep: int, protect: set, current: str) -> list:
    removed = []
    for name in os.listdir(root):
        if name.endswith(".part") and name != f"{current}.part":
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(name)
    if keep <= 0:
        return removed
    kept = 0
    for name in versions(root):
        if name == current or name in protect:
            continue
        kept += 1
        # The new version counts against keep; protected ones are kept on top.
        if kept >= keep:
            shutil.rmtree(os.path.join(root, name))
            removed.append(name)
    return removed


def point_link(link: str, target: str) -> None:
    """Atomically point link at target (a relative link when both are on the same volume)."""
    if os.path.lexists(link) and not os.path.islink(link):
        log(
            f"{link} is a directory, not a link (written before versioned merges): left as it is; "
            f"the served model is {target}"
        )
        return
    relative = os.path.relpath(target, os.path.dirname(link))
    tmp = f"{link}.tmp-{os.getpid()}"
    os.symlink(relative, tmp)
    os.replace(tmp, link)
    log(f"{link} -> {relative}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the rendered LLaMA-Factory merge config")
    parser.add_argument("--versions-dir", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--link", default="", help="a link pointed at the new version ('' = none)")
    parser.add_argument("--keep", type=int, default=3)
    parser.add_argument("--protect", action="append", default=[], help="a version never pruned (repeatable)")
    parser.add_argument("--allow-pickle", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the export command (config path appended)")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not VERSION.match(args.version):
        parser.error(f"--version {args.version!r}: letters, digits, '.', '_', '-' (at most 63)")
    if not command:
        parser.error("no export command after --")

    root = args.versions_dir
    final = os.path.join(root, args.version)
    part = f"{final}.part"
    if os.path.exists(final):
        log(f"version {args.version} exists already at {final}: a merge never overwrites a version")
        return 2
    os.makedirs(root, exist_ok=True)
    shutil.rmtree(part, ignore_errors=True)

    with open(args.config, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    config["export_dir"] = part
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="merge-", delete=False) as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
        config_copy = handle.name

    started = time.monotonic()
    log(f"merging into {part}: {' '.join([*command, config_copy])}")
    rc = subprocess.call([*command, config_copy])
    os.unlink(config_copy)
    if rc != 0:
        shutil.rmtree(part, ignore_errors=True)
        log(f"the export failed (exit {rc}); nothing was kept")
        return rc
    log(f"export done in {time.monotonic() - started:.1f} s; checking the model (model_manifest)")

    result = model_manifest.inspect_model_dir(part, allow_pickle=args.allow_pickle)
    if result["errors"]:
        shutil.rmtree(part, ignore_errors=True)
        log("the merged model fails its check, nothing was kept:")
        for error in result["errors"]:
            log(f"  {error}")
        return 3
    # The same cache file model_manifest writes on the hosts: a later check there reuses the hashes.
    model_manifest.write_atomic(
        os.path.join(part, ".llmops-manifest.json"), model_manifest.render_cache(final, result["entries"])
    )
    os.rename(part, final)
    log(
        f"version {args.version}: {result['file_count']} files, {result['total_size']} bytes, "
        f"digest {result['content_digest']}"
    )
    if args.link:
        point_link(args.link, final)
    removed = prune(root, args.keep, set(args.protect), args.version)
    log(f"pruned {', '.join(removed)}" if removed else "nothing to prune")
    record = {"version": args.version, "path": final, "digest": result["content_digest"]}
    print(f"{MARK} {json.dumps(record, sort_keys=True)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
