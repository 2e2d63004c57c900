#!/usr/bin/python
# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: model_manifest
short_description: Check a Hugging Face model directory and build a sha256 manifest of its files
version_added: 0.1.0
description:
  - Checks that a directory holds a loadable Hugging Face model, without loading it. C(config.json) must be a
    JSON object with C(model_type) or C(architectures); a tokenizer must be present (O(require_tokenizer));
    weights must be safetensors (pickled C(*.bin), C(*.pt), C(*.pth), C(*.ckpt) files only with
    O(allow_pickle=true)); other top-level JSON files must parse.
  - Every C(*.safetensors) file's header is read and checked against the file. The header length must fit
    the file, the header must be JSON, each tensor's byte size must match its dtype and shape, and the
    tensors must exactly fill the data section. A copy cut short therefore fails here, naming the file and
    the missing bytes.
  - A sharded model's C(*.safetensors.index.json) must list only shards that exist, every C(*.safetensors)
    file next to it must be listed, each shard must hold the tensors the C(weight_map) puts there, and
    C(metadata.total_size), when present, must equal the bytes of the shards' tensors.
  - Builds a manifest of every regular file (path, size, mtime, sha256) and a RV(content_digest) over
    paths, sizes and hashes only, so two copies with the same content have the same digest whatever their
    timestamps. Files are hashed in parallel (O(workers) threads).
  - With O(cache_file), files whose size, mtime, ctime and inode are unchanged since the cache was written
    reuse their recorded sha256 instead of being read again; re-checking an unchanged multi-GB model then
    takes well under a second. The cache is then rewritten; that is the only change this module makes.
  - O(expected_digest) or O(expected_manifest) verify a copy against its source, listing files that are
    missing, extra or changed.
author:
  - llmops.platform maintainers (@llmops)
options:
  path:
    description:
      - The model directory.
    type: path
    required: true
  exclude:
    description:
      - Glob patterns of paths (relative to O(path), C(/)-separated) left out of the checks and the manifest.
        C(*) also matches C(/). A directory is left out with everything below it when C(dir/) matches,
        as it does for C(dir/**).
      - The default leaves out this collection's own files (C(.llmops-*)), the C(.cache) directory that
        C(huggingface-cli download --local-dir) writes, and C(.git).
      - O(cache_file) and its temporary files are always left out when they are inside O(path).
    type: list
    elements: str
    default: ['.llmops-*', '.cache/**', '.git/**']
  cache_file:
    description:
      - A JSON file recording the manifest with each file's size, mtime, ctime and inode.
      - When it exists and was written for this O(path), files whose stat data are unchanged reuse its
        sha256. It is written after every run whose result differs from its content (the task is then C(changed)).
      - A cache written for another directory is never used, so an C(rsync -a) copy, which keeps sizes and
        mtimes, is always hashed in full the first time.
      - A typical value is C(<path>/.llmops-manifest.json). A missing parent directory is created (mode 0700).
    type: path
  workers:
    description:
      - Files hashed in parallel. Defaults to the number of CPUs, at most 8.
    type: int
  allow_pickle:
    description:
      - Accept pickled weights (C(*.bin), C(*.pt), C(*.pth), C(*.ckpt), C(*.pkl), C(*.pickle)). Loading
        a pickle runs code the file carries, so by default such a file is an error even next to
        safetensors weights.
    type: bool
    default: false
  require_tokenizer:
    description:
      - Require a tokenizer (C(tokenizer.json), C(tokenizer.model), C(spiece.model),
        C(sentencepiece.bpe.model), C(vocab.json), C(vocab.txt) or C(*.tiktoken)) at the top of O(path).
    type: bool
    default: true
  kind:
    description:
      - V(model) checks a model directory as described above.
      - V(lora_adapter) checks a PEFT LoRA adapter directory (what C(llamafactory-cli train) writes, what vLLM
        serves with C(--lora-modules)) instead. C(adapter_config.json) must be a JSON object with C(peft_type)
        C(LORA) and a positive integer rank C(r), and the weights safetensors; no C(config.json) or tokenizer is
        required. The manifest and RV(content_digest) are built the same way, so adapters are versioned and
        verified like models (role model_sync, C(model_sync_kind)).
      - With V(lora_adapter) what a trainer leaves in its output directory is left out as well, as if added to
        O(exclude) (C(checkpoint-*/**), C(training_args.bin), C(optimizer.pt), C(scheduler.pt),
        C(rng_state*.pth)); vLLM never reads these pickled files.
    type: str
    choices: [model, lora_adapter]
    default: model
    version_added: 0.1.0
  expected_digest:
    description:
      - Fail unless RV(content_digest) equals this, for example the digest of the source a copy was made from.
    type: str
  expected_manifest:
    description:
      - A manifest to compare with, from another run of this module on the source of a copy. Either the list
        RV(manifest) or a dict holding it under C(manifest) (a registered result, or the content of a
        O(cache_file)).
      - Entries need C(path), C(size) and C(sha256); mtimes are ignored. Each missing, extra or changed file
        is an error naming it, and RV(differences) lists them.
    type: raw
  fail_on_invalid:
    description:
      - Fail the task when any check fails. With V(false) the module returns RV(valid=false) and the
        RV(errors) instead, for playbooks that decide themselves (for example to copy the model again).
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Checks and hashes as usual; only the write of O(cache_file) is skipped, and C(changed) says
      whether it would have been written.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Needs only Python 3.8 or later on the host that holds the model; it does not import torch or safetensors.
  - Symlinks to files are followed (a Hugging Face cache snapshot is made of them); symlinks to directories
    are not, and a broken symlink is an error.
  - The cache trusts stat data. A file rewritten in place with its old size and mtime restored still has a
    new ctime, so it is hashed again.
seealso:
  - name: safetensors format
    description: The file layout the header checks follow.
    link: https://huggingface.co/docs/safetensors/index
"""

EXAMPLES = r"""
- name: Check the model on the serving host and record its manifest
  llmops.platform.model_manifest:
    path: /srv/models/llama-3-8b-instruct
    cache_file: /srv/models/llama-3-8b-instruct/.llmops-manifest.json
  register: source

- name: Verify a copy against the source manifest; list what differs instead of failing
  llmops.platform.model_manifest:
    path: /srv/models/incoming/llama-3-8b-instruct
    expected_manifest: "{{ source.manifest }}"
    fail_on_invalid: false
  register: copy

- name: Copy again when the check found problems
  ansible.builtin.debug:
    msg: "{{ copy.differences.changed + copy.differences.missing }} must be copied again"
  when: not copy.valid

- name: Only the digest is known (for example from a model registry)
  llmops.platform.model_manifest:
    path: /srv/models/llama-3-8b-instruct
    expected_digest: "{{ registry_digest }}"
"""

RETURN = r"""
valid:
  description: Whether every check passed (and the expected digest or manifest matched, when given).
  returned: always
  type: bool
  sample: true
errors:
  description: One line per problem, naming the file (relative to O(path)) and what is wrong.
  returned: always
  type: list
  elements: str
  sample:
    - "model-00002-of-00004.safetensors: tensors end at byte 1048576 of the data section but it holds 524288:
      file truncated by 524288 bytes (3 tensors past the end, first 'lm_head.weight')"
manifest:
  description: Every file, sorted by path.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: Path relative to O(path), C(/)-separated.
      type: str
      sample: model.safetensors
    size:
      description: Bytes.
      type: int
      sample: 1446544
    mtime_ns:
      description: Modification time in nanoseconds since the epoch (not part of RV(content_digest)).
      type: int
      sample: 1795739513201000000
    sha256:
      description: sha256 of the content, hex.
      type: str
      sample: f68675a3a1d2baa449e7ee014eec4121ce3f7f837483a5543a7590e10a2afd83
content_digest:
  description:
    - sha256 (hex) over one line per file of the manifest, sorted by path, each C(<path> NUL <size> NUL <sha256> LF).
    - Independent of mtimes, so copies with the same content have the same digest.
  returned: always
  type: str
  sample: e8ff8ffa0f6184e16485837df04d9a7e902eac8066f5cad4a97d13f0d36bfd7b
total_size:
  description: Bytes of all files in the manifest.
  returned: always
  type: int
  sample: 1455042
file_count:
  description: Files in the manifest.
  returned: always
  type: int
  sample: 6
hashed_files:
  description: Files read and hashed in this run.
  returned: always
  type: int
  sample: 1
reused_files:
  description: Files whose sha256 came from O(cache_file) because their stat data were unchanged.
  returned: always
  type: int
  sample: 5
hashed_bytes:
  description: Bytes read and hashed in this run.
  returned: always
  type: int
  sample: 1446544
elapsed:
  description: Seconds the module took.
  returned: always
  type: float
  sample: 0.042
model_type:
  description: C(model_type) from C(config.json); null when it is missing or unreadable.
  returned: always
  type: str
  sample: llama
architectures:
  description: C(architectures) from C(config.json).
  returned: always
  type: list
  elements: str
  sample: [LlamaForCausalLM]
weight_format:
  description: C(safetensors), C(pickle) (only with O(allow_pickle)), or null when no weights were found.
  returned: always
  type: str
  sample: safetensors
sharded:
  description: Whether a C(*.safetensors.index.json) was found.
  returned: always
  type: bool
  sample: false
tensor_bytes:
  description: Bytes of all tensors in the safetensors files, as their headers declare.
  returned: always
  type: int
  sample: 1444352
lora_rank:
  description: The LoRA rank C(r) of an adapter (O(kind=lora_adapter)); null otherwise.
  returned: always
  type: int
  sample: 8
base_model:
  description: C(base_model_name_or_path) of an adapter's C(adapter_config.json) (O(kind=lora_adapter)); null otherwise.
  returned: always
  type: str
  sample: /storage/models/base
differences:
  description: Files that differ from O(expected_manifest); empty lists when it was not given.
  returned: always
  type: dict
  contains:
    missing:
      description: In the expected manifest, not in O(path).
      type: list
      elements: str
      sample: [model-00003-of-00004.safetensors]
    extra:
      description: In O(path), not in the expected manifest.
      type: list
      elements: str
      sample: []
    changed:
      description: In both, with another size or sha256.
      type: list
      elements: str
      sample: [model-00002-of-00004.safetensors]
cache_file:
  description: The cache file used, null without O(cache_file).
  returned: always
  type: str
  sample: /srv/models/llama-3-8b-instruct/.llmops-manifest.json
cache_written:
  description: Whether O(cache_file) was written in this run (never in check mode).
  returned: always
  type: bool
  sample: true
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.platform.plugins.module_utils.model_manifest import (
    DEFAULT_EXCLUDE,
    KINDS,
    compare_manifests,
    inspect_model_dir,
    load_cache,
    normalize_expected,
    render_cache,
    write_atomic,
)

MAX_ERRORS_IN_MSG = 5


def argument_spec():
    return {
        "path": {"type": "path", "required": True},
        "exclude": {"type": "list", "elements": "str", "default": list(DEFAULT_EXCLUDE)},
        "cache_file": {"type": "path"},
        "workers": {"type": "int"},
        "allow_pickle": {"type": "bool", "default": False},
        "require_tokenizer": {"type": "bool", "default": True},
        "kind": {"type": "str", "choices": list(KINDS), "default": "model"},
        "expected_digest": {"type": "str"},
        "expected_manifest": {"type": "raw"},
        "fail_on_invalid": {"type": "bool", "default": True},
    }


def own_files(root, cache_file):
    """Exclude patterns for the cache file and its temporary files when they live inside the model."""
    rel = os.path.relpath(os.path.abspath(cache_file), os.path.abspath(root))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return []
    rel = rel.replace(os.sep, "/")
    parent = os.path.dirname(rel)
    return [rel, f"{parent}/.llmops-manifest-*" if parent else ".llmops-manifest-*"]


def summary(root, errors):
    shown = "; ".join(errors[:MAX_ERRORS_IN_MSG])
    more = f"; and {len(errors) - MAX_ERRORS_IN_MSG} more (see errors)" if len(errors) > MAX_ERRORS_IN_MSG else ""
    return f"model directory {root} failed {len(errors)} check(s): {shown}{more}"


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    started = time.monotonic()
    root = params["path"]
    cache_file = params["cache_file"]
    workers = params["workers"]
    if workers is not None and workers < 1:
        module.fail_json(msg=f"workers must be at least 1, got {workers}")
    expected = None
    if params["expected_manifest"] is not None:
        try:
            expected = normalize_expected(params["expected_manifest"])
        except ValueError as exc:
            module.fail_json(msg=str(exc))

    exclude = list(params["exclude"])
    previous = {}
    if cache_file:
        exclude += own_files(root, cache_file)
        previous, problem = load_cache(cache_file, root)
        if problem:
            module.warn(problem)

    inspected = inspect_model_dir(
        root,
        exclude=exclude,
        workers=workers,
        allow_pickle=params["allow_pickle"],
        require_tokenizer=params["require_tokenizer"],
        kind=params["kind"],
        previous=previous,
    )
    for warning in inspected["warnings"]:
        module.warn(warning)
    errors = list(inspected["errors"])
    differences = {"missing": [], "extra": [], "changed": []}
    if expected is not None:
        compared = compare_manifests(inspected["manifest"], expected)
        errors.extend(compared.pop("errors"))
        differences = compared
    if params["expected_digest"] and params["expected_digest"].lower() != inspected["content_digest"]:
        errors.append(
            f"content_digest {inspected['content_digest']} differs from expected_digest {params['expected_digest']}"
        )

    changed = cache_written = False
    if cache_file and os.path.isdir(root):
        text = render_cache(root, inspected["entries"])
        try:
            with open(cache_file, encoding="utf-8") as handle:
                changed = handle.read() != text
        except (OSError, ValueError):  # absent or unreadable: write a fresh one
            changed = True
        if changed and not module.check_mode:
            try:
                write_atomic(cache_file, text)
            except OSError as exc:
                module.fail_json(msg=f"cannot write cache_file {cache_file}: {exc}", errors=errors)
            cache_written = True

    facts = inspected["facts"]
    result = {
        "changed": changed,
        "valid": not errors,
        "errors": errors,
        "manifest": inspected["manifest"],
        "content_digest": inspected["content_digest"],
        "total_size": inspected["total_size"],
        "file_count": inspected["file_count"],
        "hashed_files": inspected["hashed_files"],
        "reused_files": inspected["reused_files"],
        "hashed_bytes": inspected["hashed_bytes"],
        "model_type": facts.get("model_type"),
        "architectures": facts.get("architectures") or [],
        "weight_format": facts.get("weight_format"),
        "sharded": bool(facts.get("sharded")),
        "tensor_bytes": facts.get("tensor_bytes", 0),
        "lora_rank": facts.get("lora_rank"),
        "base_model": facts.get("base_model"),
        "differences": differences,
        "cache_file": cache_file,
        "cache_written": cache_written,
        "elapsed": round(time.monotonic() - started, 3),
    }
    if errors and params["fail_on_invalid"]:
        module.fail_json(msg=summary(root, errors), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
