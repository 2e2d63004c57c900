# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check a Hugging Face model directory and build a sha256 manifest of it.

Standard library only, Python 3.8 compatible: it runs on managed hosts inside the model_manifest module
and in the controller's tests and benchmarks.

* `check_model_dir` validates the layout: config.json, tokenizer files, weights (safetensors; pickled
  weights only when allowed), a sharded model's index against its shards, and every safetensors header
  against its file (a truncated copy fails here, before anything tries to load it).
* `build_manifest` hashes every file in a thread pool. hashlib releases the GIL while it hashes a large
  buffer, so threads scale over cores. A previous cache lets unchanged files skip hashing.
* `content_digest` is a sha256 over path, size and sha256 of every file, not mtimes: two copies with the
  same content have the same digest whatever their timestamps.

Every problem is reported as one string naming the file (relative to the model directory) and the problem.
"""

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

import fnmatch
import hashlib
import json
import os
import stat
import struct
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

CACHE_FORMAT = "llmops.platform.model_manifest/1"
DEFAULT_EXCLUDE = (".llmops-*", ".cache/**", ".git/**")
CHUNK_SIZE = 4 * 1024 * 1024
MAX_WORKERS = 8

CONFIG_FILE = "config.json"
# A PEFT LoRA adapter (what `llamafactory-cli train` writes to its output_dir and vLLM serves with --lora-modules):
# this file instead of config.json, its weights in adapter_model.safetensors.
ADAPTER_CONFIG_FILE = "adapter_config.json"
KINDS = ("model", "lora_adapter")
# What a trainer leaves next to the adapter in its output_dir (LLaMA-Factory: checkpoint-N/ with the optimizer
# state, training_args.bin, all pickled): never served, so an adapter's manifest (and model_sync's copy, whose
# rsync excludes in roles/model_sync/vars/main.yml name the same files) leaves them out.
ADAPTER_EXCLUDE = ("checkpoint-*/**", "training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state*.pth")
SAFETENSORS_INDEX_SUFFIX = ".safetensors.index.json"
# Any one of these makes a tokenizer: fast (tokenizer.json), sentencepiece, BPE/WordPiece vocab files,
# tiktoken ranks.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
)
TOKENIZER_PATTERNS = ("*.tiktoken",)
# Formats that unpickle on load, and so run code the file carries.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")

# The safetensors library refuses headers above 100 MB (MAX_HEADER_SIZE); nothing real comes close.
MAX_HEADER_SIZE = 100 * 1000 * 1000
# Bits per element of the safetensors dtypes (safetensors/src/tensor.rs, Dtype::bitsize).
DTYPE_BITS = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
}


class SafetensorsError(ValueError):
    """A safetensors file whose header or layout is wrong; the message says what."""


def default_workers() -> int:
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


# -- listing ---------------------------------------------------------------------------------------


class FileStat:
    """One regular file of the model directory, as stat saw it before hashing."""

    __slots__ = ("ctime_ns", "inode", "mtime_ns", "path", "size")

    def __init__(self, path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> None:
        self.path = path  # relative, "/"-separated
        self.size = size
        self.mtime_ns = mtime_ns
        self.ctime_ns = ctime_ns
        self.inode = inode

    @classmethod
    def from_stat(cls, path: str, st: os.stat_result) -> "FileStat":
        return cls(path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def same_file(self, other: "FileStat") -> bool:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode) == (
            other.size,
            other.mtime_ns,
            other.ctime_ns,
            other.inode,
        )


def is_excluded(rel_path: str, patterns: Sequence[str], is_dir: bool = False) -> bool:
    """fnmatch on the relative path ("*" crosses "/"); a directory matches when "dir/" does, so
    `.cache/**` prunes the whole `.cache` tree."""
    candidates = [rel_path + "/"] if is_dir else [rel_path]
    return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in patterns)


def list_files(root: str, exclude: Sequence[str] = DEFAULT_EXCLUDE) -> Tuple[List[FileStat], List[str], List[str]]:
    """Regular files under root (symlinks to files are followed, symlinked directories are not),
    sorted by relative path. Returns (files, errors, warnings)."""
    files = []  # type: List[FileStat]
    errors = []  # type: List[str]
    warnings = []  # type: List[str]
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        abs_dir = os.path.join(root, rel_dir) if rel_dir else root
        try:
            entries = list(os.scandir(abs_dir))
        except OSError as exc:
            errors.append(f"{rel_dir or '.'}: cannot list directory: {exc.strerror or exc}")
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError as exc:
                errors.append(f"{rel}: cannot stat: {exc.strerror or exc}")
                continue
            if is_dir:
                if not is_excluded(rel, exclude, is_dir=True):
                    pending.append(rel)
                continue
            if is_excluded(rel, exclude):
                continue
            try:
                st = os.stat(entry.path)  # follows a symlink: its target's content is what gets loaded
            except FileNotFoundError:
                errors.append(f"{rel}: broken symlink to {os.readlink(entry.path)!r}")
                continue
            except OSError as exc:
                errors.append(f"{rel}: cannot stat: {exc.strerror or exc}")
                continue
            if stat.S_ISREG(st.st_mode):
                files.append(FileStat.from_stat(rel, st))
            elif stat.S_ISDIR(st.st_mode) and is_link:
                warnings.append(f"{rel}: symlink to a directory, not followed")
            else:
                errors.append(f"{rel}: not a regular file (mode {stat.filemode(st.st_mode)})")
    files.sort(key=lambda f: f.path)
    return files, sorted(errors), sorted(warnings)


# -- hashing ---------------------------------------------------------------------------------------


_buffers = threading.local()


def hash_file(path: str, chunk_size: int = CHUNK_SIZE) -> Tuple[str, int]:
    """sha256 of a file and the bytes read. Reads into one reused buffer per thread; hashlib hashes
    buffers above 2 KiB with the GIL released, so several threads hash in parallel."""
    buf = getattr(_buffers, "buf", None)
    if buf is None or len(buf) != chunk_size:
        buf = _buffers.buf = bytearray(chunk_size)
    view = memoryview(buf)
    digest = hashlib.sha256()
    read = 0
    with open(path, "rb", buffering=0) as handle:
        while True:
            n = handle.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
            read += n
    return digest.hexdigest(), read


def manifest_lines(entries: Iterable[Dict[str, Any]]) -> bytes:
    return b"".join(f"{e['path']}\0{e['size']}\0{e['sha256']}\n".encode() for e in entries)


def content_digest(entries: Iterable[Dict[str, Any]]) -> str:
    """sha256 over the "path\\0size\\0sha256\\n" lines of the entries sorted by path (mtimes do not count)."""
    return hashlib.sha256(manifest_lines(sorted(entries, key=lambda e: e["path"]))).hexdigest()


def build_manifest(
    root: str,
    files: Sequence[FileStat],
    workers: Optional[int] = None,
    previous: Optional[Dict[str, Dict[str, Any]]] = None,
    chunk_size: int = CHUNK_SIZE,
) -> Dict[str, Any]:
    """Hash files (largest first, over `workers` threads), reusing the sha256 of files `previous` (a
    cache, path -> entry) saw with the same size, mtime, ctime and inode.

    Returns entries (path, size, mtime_ns, sha256; ctime_ns and inode for the cache), hashed_files,
    reused_files, hashed_bytes and errors (a file that vanished, could not be read, or changed while
    it was hashed: its entry is left out).
    """
    previous = previous or {}
    entries = {}  # type: Dict[str, Dict[str, Any]]
    to_hash = []  # type: List[FileStat]
    for f in files:
        old = previous.get(f.path)
        if old is not None and f.same_file(
            FileStat(f.path, old["size"], old["mtime_ns"], old.get("ctime_ns", -1), old.get("inode", -1))
        ):
            entries[f.path] = _entry(f, old["sha256"])
        else:
            to_hash.append(f)
    to_hash.sort(key=lambda f: f.size, reverse=True)  # big files first: the pool finishes together

    def work(f: FileStat) -> Tuple[FileStat, Optional[str], Optional[str]]:
        path = os.path.join(root, f.path)
        try:
            sha, read = hash_file(path, chunk_size)
            after = FileStat.from_stat(f.path, os.stat(path))
        except OSError as exc:
            return f, None, f"{f.path}: cannot read: {exc.strerror or exc}"
        if read != f.size or not after.same_file(f):
            return f, None, f"{f.path}: changed while it was being hashed (size {f.size} -> {after.size})"
        return f, sha, None

    errors = []  # type: List[str]
    hashed_bytes = 0
    if to_hash:
        with ThreadPoolExecutor(max_workers=max(1, workers or default_workers())) as pool:
            for f, sha, error in pool.map(work, to_hash):
                if error:
                    errors.append(error)
                else:
                    entries[f.path] = _entry(f, sha)
                    hashed_bytes += f.size
    ordered = [entries[f.path] for f in files if f.path in entries]
    return {
        "entries": ordered,
        "hashed_files": len(to_hash) - len(errors),
        "reused_files": len(files) - len(to_hash),
        "hashed_bytes": hashed_bytes,
        "errors": sorted(errors),
    }


def _entry(f: FileStat, sha256: str) -> Dict[str, Any]:
    return {
        "path": f.path,
        "size": f.size,
        "mtime_ns": f.mtime_ns,
        "ctime_ns": f.ctime_ns,
        "inode": f.inode,
        "sha256": sha256,
    }


def public_entry(entry: Dict[str, Any]) -> Dict[str, Any]:
    """The manifest entry as returned: what identifies content, plus the mtime it was seen with."""
    return {k: entry[k] for k in ("path", "size", "mtime_ns", "sha256")}


# -- cache -----------------------------------------------------------------------------------------


def render_cache(root: str, entries: Sequence[Dict[str, Any]]) -> str:
    """The cache file: the manifest of `root` with the stat data that decides reuse, in a stable form
    (identical runs give identical bytes, so an unchanged model does not rewrite it)."""
    document = {
        "format": CACHE_FORMAT,
        "path": os.path.realpath(root),
        "content_digest": content_digest(entries),
        "total_size": sum(e["size"] for e in entries),
        "file_count": len(entries),
        "manifest": list(entries),
    }
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


def load_cache(cache_file: str, root: str) -> Tuple[Dict[str, Dict[str, Any]], Optional[str]]:
    """Entries of a cache written for this same directory, by path; (entries, None) or ({}, why not).

    A cache for another directory is never used: an rsync'ed copy has the same sizes and mtimes as its
    source, and reusing the source's hashes would skip verifying the copy.
    """
    try:
        with open(cache_file, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as exc:
        return {}, f"cache file {cache_file} is unreadable, hashing everything: {exc}"
    if not isinstance(document, dict) or document.get("format") != CACHE_FORMAT:
        return {}, f"cache file {cache_file} is not a {CACHE_FORMAT} cache, hashing everything"
    if document.get("path") != os.path.realpath(root):
        return {}, f"cache file {cache_file} belongs to {document.get('path')!r}, hashing everything"
    entries = {}
    for entry in document.get("manifest") or []:
        try:
            usable = isinstance(entry["path"], str) and len(entry["sha256"]) == 64
            usable = usable and all(isinstance(entry[k], int) for k in ("size", "mtime_ns"))
            if usable:
                entries[entry["path"]] = entry
        except (KeyError, TypeError, ValueError):
            continue  # a damaged entry only costs hashing that file again
    return entries, None


def write_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".llmops-manifest-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- comparing with an expected manifest -------------------------------------------------------------


def normalize_expected(expected: Any) -> List[Dict[str, Any]]:
    """Accept a manifest list, or a dict holding one under `manifest` (a registered result of this module
    or a cache file). Raises ValueError naming what is wrong."""
    if isinstance(expected, dict):
        if "manifest" not in expected:
            raise ValueError("expected_manifest is a dict without a 'manifest' key")
        expected = expected["manifest"]
    if not isinstance(expected, list):
        raise ValueError(f"expected_manifest must be a list of entries, got {type(expected).__name__}")
    normalized = []
    for i, entry in enumerate(expected):
        try:
            normalized.append({"path": str(entry["path"]), "size": int(entry["size"]), "sha256": str(entry["sha256"])})
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"expected_manifest entry {i} needs path, size and sha256: {exc!r}") from None
    return normalized


def compare_manifests(actual: Sequence[Dict[str, Any]], expected: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Differences by path: missing (expected, not here), extra (here, not expected), changed (size or
    sha256 differ), and one error string per difference."""
    have = {e["path"]: e for e in actual}
    want = {e["path"]: e for e in expected}
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    changed = []
    errors = [f"{p}: missing (expected {want[p]['size']} bytes, sha256 {want[p]['sha256']})" for p in missing]
    errors += [f"{p}: not in the expected manifest ({have[p]['size']} bytes)" for p in extra]
    for path in sorted(set(have) & set(want)):
        a, w = have[path], want[path]
        if a["size"] != w["size"]:
            changed.append(path)
            errors.append(f"{path}: size {a['size']} differs from the expected {w['size']}")
        elif a["sha256"] != w["sha256"]:
            changed.append(path)
            errors.append(f"{path}: sha256 {a['sha256']} differs from the expected {w['sha256']}")
    return {"missing": missing, "extra": extra, "changed": changed, "errors": errors}


# -- safetensors -----------------------------------------------------------------------------------


def read_safetensors_header(path: str) -> Tuple[Dict[str, Any], int, int]:
    """(header, header_length, file_size) of a safetensors file, checked only for shape.

    Format: 8-byte little-endian unsigned header length N, N bytes of JSON (an object), then the data
    section the tensors' data_offsets index into.
    """
    size = os.path.getsize(path)
    if size < 8:
        raise SafetensorsError(f"{size} bytes, too short for the 8-byte header length")
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > MAX_HEADER_SIZE:
            raise SafetensorsError(f"header length {length} is over the {MAX_HEADER_SIZE}-byte limit")
        if 8 + length > size:
            raise SafetensorsError(f"header length {length} runs past the end of the {size}-byte file (truncated?)")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SafetensorsError(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"header is a JSON {type(header).__name__}, not an object")
    return header, length, size


def safetensors_tensors(path: str) -> Tuple[Optional[Dict[str, int]], List[str]]:
    """Check a safetensors file against its header; return ({tensor name: bytes}, problems), with None
    instead of the tensors when the header itself cannot be read.

    Problems: unreadable header, malformed tensor entries, a byte size that does not match dtype and
    shape, offsets outside the data section, gaps or overlaps, and a data section longer or shorter
    than the tensors (a copy cut short fails here).
    """
    try:
        header, length, size = read_safetensors_header(path)
    except (OSError, SafetensorsError) as exc:
        return None, [str(exc)]
    data_size = size - 8 - length
    problems = []
    tensors = {}
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict):
                problems.append("__metadata__ is not an object")
            continue
        if not isinstance(info, dict):
            problems.append(f"tensor {name!r}: entry is not an object")
            continue
        offsets = info.get("data_offsets")
        shape = info.get("shape")
        dtype = info.get("dtype")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]
        ):
            problems.append(f"tensor {name!r}: data_offsets {offsets!r} are not [begin, end] with 0 <= begin <= end")
            continue
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            problems.append(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
            continue
        begin, end = offsets
        nbytes = end - begin
        if dtype in DTYPE_BITS:
            elements = 1
            for dim in shape:
                elements *= dim
            expected = (elements * DTYPE_BITS[dtype] + 7) // 8
            if nbytes != expected:
                problems.append(f"tensor {name!r}: {nbytes} bytes but {dtype} {shape} needs {expected}")
        tensors[name] = nbytes
        spans.append((begin, end, name))
    spans.sort()
    beyond = [name for _begin, end, name in spans if end > data_size]
    if beyond:
        # One line per file, not per tensor: a shard cut in half would otherwise list hundreds.
        last = max(end for _begin, end, _name in spans)
        problems.append(
            f"tensors end at byte {last} of the data section but it holds {data_size}: file truncated by "
            f"{last - data_size} bytes ({len(beyond)} tensors past the end, first {beyond[0]!r})"
        )
        return tensors, problems
    position = 0
    for begin, end, name in spans:
        if begin > position:
            problems.append(f"tensor {name!r}: {begin - position} unused bytes before it (offset {position})")
        elif begin < position:
            problems.append(f"tensor {name!r}: overlaps the previous tensor (starts at {begin} < {position})")
        position = max(position, end)
    if position < data_size:
        problems.append(
            f"{data_size - position} bytes after the last tensor (data section {data_size}, tensors end at {position})"
        )
    return tensors, problems


# -- the model directory ---------------------------------------------------------------------------


def _load_json(path: str) -> Tuple[Any, Optional[str]]:
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8")), None
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"not valid JSON: {exc}"


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _check_adapter_config(root: str, names: set, errors: List[str], facts: Dict[str, Any]) -> None:
    """adapter_config.json of a LoRA adapter: a JSON object with peft_type LORA and a positive integer rank r."""
    if ADAPTER_CONFIG_FILE not in names:
        errors.append(f"{ADAPTER_CONFIG_FILE}: missing (a LoRA adapter directory, as PEFT saves it)")
        return
    config, problem = _load_json(os.path.join(root, ADAPTER_CONFIG_FILE))
    if problem:
        errors.append(f"{ADAPTER_CONFIG_FILE}: {problem}")
        return
    if not isinstance(config, dict):
        errors.append(f"{ADAPTER_CONFIG_FILE}: a JSON {type(config).__name__}, not an object")
        return
    if str(config.get("peft_type", "")).upper() != "LORA":
        errors.append(f"{ADAPTER_CONFIG_FILE}: peft_type is {config.get('peft_type')!r}, not LORA")
    rank = config.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        errors.append(f"{ADAPTER_CONFIG_FILE}: r (the LoRA rank) is {rank!r}, not a positive integer")
    else:
        facts["lora_rank"] = rank
    facts["base_model"] = config.get("base_model_name_or_path")


def check_model_dir(
    root: str,
    files: Sequence[FileStat],
    allow_pickle: bool = False,
    require_tokenizer: bool = True,
    kind: str = "model",
) -> Tuple[List[str], Dict[str, Any]]:
    """Validate the layout of a model directory whose (non-excluded) files are `files`.

    ``kind`` lora_adapter: a PEFT LoRA adapter instead, adapter_config.json in place of config.json, no
    tokenizer required. Returns (errors, facts): facts holds model_type, architectures, weight_format
    (safetensors, pickle or null), sharded and tensor_bytes, and for an adapter lora_rank and base_model.
    """
    if kind not in KINDS:
        raise ValueError("kind must be one of {}, got {!r}".format(", ".join(KINDS), kind))
    errors = []  # type: List[str]
    facts = {
        "model_type": None,
        "architectures": [],
        "weight_format": None,
        "sharded": False,
        "tensor_bytes": 0,
        "lora_rank": None,
        "base_model": None,
    }  # type: Dict[str, Any]
    names = {f.path for f in files}
    top = sorted(n for n in names if "/" not in n)

    if kind == "lora_adapter":
        _check_adapter_config(root, names, errors, facts)
        require_tokenizer = False
    # config.json
    elif CONFIG_FILE not in names:
        errors.append(f"{CONFIG_FILE}: missing")
    else:
        config, problem = _load_json(os.path.join(root, CONFIG_FILE))
        if problem:
            errors.append(f"{CONFIG_FILE}: {problem}")
        elif not isinstance(config, dict):
            errors.append(f"{CONFIG_FILE}: a JSON {type(config).__name__}, not an object")
        else:
            facts["model_type"] = config.get("model_type")
            facts["architectures"] = config.get("architectures") or []
            if not config.get("model_type") and not config.get("architectures"):
                errors.append(f"{CONFIG_FILE}: has neither model_type nor architectures")

    # Other top-level JSON files (tokenizer, generation config, ...): a cut-off copy shows as bad JSON.
    for name in top:
        if (
            name.endswith(".json")
            and name not in (CONFIG_FILE, ADAPTER_CONFIG_FILE)
            and not name.endswith(SAFETENSORS_INDEX_SUFFIX)
        ):
            _document, problem = _load_json(os.path.join(root, name))
            if problem:
                errors.append(f"{name}: {problem}")

    # tokenizer
    if require_tokenizer and not any(n in TOKENIZER_FILES or _matches(n, TOKENIZER_PATTERNS) for n in top):
        errors.append(
            f"tokenizer: none of {', '.join(TOKENIZER_FILES + TOKENIZER_PATTERNS)} found "
            "(set require_tokenizer: false for a directory of weights only)"
        )

    # weights
    safetensors = sorted(n for n in names if n.endswith(".safetensors"))
    pickles = sorted(n for n in names if _matches(os.path.basename(n), PICKLE_PATTERNS))
    if pickles and not allow_pickle:
        errors.extend(
            f"{n}: pickled weights run code when loaded; convert to safetensors, exclude the file, "
            "or set allow_pickle: true"
            for n in pickles
        )
    if safetensors:
        facts["weight_format"] = "safetensors"
    elif pickles and allow_pickle:
        facts["weight_format"] = "pickle"
    elif not pickles:
        errors.append("weights: no *.safetensors file" + (" (nor allowed pickle weights)" if allow_pickle else ""))

    tensors_by_file = {}  # type: Dict[str, Dict[str, int]]
    for name in safetensors:
        tensors, problems = safetensors_tensors(os.path.join(root, name))
        if tensors is not None:
            tensors_by_file[name] = tensors
        errors.extend(f"{name}: {p}" for p in problems)
    facts["tensor_bytes"] = sum(sum(t.values()) for t in tensors_by_file.values())

    indexes = [n for n in top if n.endswith(SAFETENSORS_INDEX_SUFFIX)]
    listed = set()  # type: set
    for index_name in indexes:
        facts["sharded"] = True
        listed |= _check_index(root, index_name, names, tensors_by_file, errors)
    if indexes:
        errors.extend(
            f"{n}: shard not listed in the weight_map of {', '.join(indexes)}"
            for n in safetensors
            if "/" not in n and n not in listed
        )
    return errors, facts


def _check_index(
    root: str,
    index_name: str,
    names: set,
    tensors_by_file: Dict[str, Dict[str, int]],
    errors: List[str],
) -> set:
    """Check one *.safetensors.index.json against the shards; return the shard names it lists."""
    index, problem = _load_json(os.path.join(root, index_name))
    if problem:
        errors.append(f"{index_name}: {problem}")
        return set()
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        errors.append(f"{index_name}: no weight_map object of tensor name -> shard file")
        return set()
    shards = {}  # type: Dict[str, List[str]]
    for tensor, shard in weight_map.items():
        shards.setdefault(shard, []).append(tensor)
    base = os.path.dirname(index_name)
    for shard in sorted(shards):
        rel = os.path.normpath(os.path.join(base, shard)).replace(os.sep, "/")
        if rel not in names:
            errors.append(f"{rel}: listed in {index_name} ({len(shards[shard])} tensors) but missing")
            continue
        present = tensors_by_file.get(rel)
        if present is None:  # its header failed (that error is reported) or it is no *.safetensors file
            continue
        absent = sorted(set(shards[shard]) - set(present))
        unlisted = sorted(set(present) - set(shards[shard]))
        if absent:
            errors.append(f"{rel}: {len(absent)} tensors {index_name} puts here are not in it: {_few(absent)}")
        if unlisted:
            errors.append(f"{rel}: {len(unlisted)} tensors not in the weight_map of {index_name}: {_few(unlisted)}")
    metadata = index.get("metadata") if isinstance(index, dict) else None
    total = metadata.get("total_size") if isinstance(metadata, dict) else None
    if total is not None:
        paths = [os.path.normpath(os.path.join(base, s)).replace(os.sep, "/") for s in shards]
        actual = sum(sum(tensors_by_file.get(p, {}).values()) for p in paths)
        if not isinstance(total, int) or isinstance(total, bool):
            errors.append(f"{index_name}: metadata.total_size {total!r} is not an integer")
        elif all(p in tensors_by_file for p in paths) and actual != total:
            errors.append(f"{index_name}: metadata.total_size is {total} but the shards' tensors hold {actual} bytes")
    return set(shards)


def _few(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# -- everything together ---------------------------------------------------------------------------


def inspect_model_dir(
    root: str,
    *,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    workers: Optional[int] = None,
    allow_pickle: bool = False,
    require_tokenizer: bool = True,
    kind: str = "model",
    previous: Optional[Dict[str, Dict[str, Any]]] = None,
    chunk_size: int = CHUNK_SIZE,
) -> Dict[str, Any]:
    """List, check and hash a model directory. Returns errors, warnings, facts, the full entries (with
    stat data, for the cache), the public manifest, content_digest, total_size, file_count,
    hashed_files, reused_files, hashed_bytes."""
    errors = []  # type: List[str]
    warnings = []  # type: List[str]
    if not os.path.exists(root):
        errors.append(f"{root}: does not exist")
    elif not os.path.isdir(root):
        errors.append(f"{root}: not a directory")
    files = []  # type: List[FileStat]
    facts = {}  # type: Dict[str, Any]
    if kind == "lora_adapter":
        exclude = [*exclude, *ADAPTER_EXCLUDE]
    if not errors:
        files, list_errors, warnings = list_files(root, exclude)
        errors.extend(list_errors)
        check_errors, facts = check_model_dir(root, files, allow_pickle, require_tokenizer, kind)
        errors.extend(check_errors)
    hashed = build_manifest(root, files, workers, previous, chunk_size)
    errors.extend(hashed["errors"])
    entries = hashed["entries"]
    return {
        "errors": errors,
        "warnings": warnings,
        "facts": facts,
        "entries": entries,
        "manifest": [public_entry(e) for e in entries],
        "content_digest": content_digest(entries),
        "total_size": sum(e["size"] for e in entries),
        "file_count": len(entries),
        "hashed_files": hashed["hashed_files"],
        "reused_files": hashed["reused_files"],
        "hashed_bytes": hashed["hashed_bytes"],
    }
