"""model_manifest module_utils: checks and hashing on real files.

Two sources of model directories:
* safetensors files written here by hand, byte by byte, from the format spec (8-byte little-endian header
  length, JSON header, data section); one test loads them with the real `safetensors` library (from the
  vLLM virtualenv) to prove the hand-written format is the real one;
* the tiny models in $LLMOPS_FIXTURES written by transformers + safetensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.llmops.platform.plugins.module_utils import model_manifest as mm  # noqa: E402

Tensor = Tuple[str, List[int], bytes]  # dtype, shape, payload


def required_env(name: str) -> Path:
    value = os.environ.get(name)
    if not value or not Path(value).exists():
        pytest.fail(f"${name} is not set or does not exist ({value!r}): run the tests through scripts/run")
    return Path(value)


def fixture_model(name: str) -> Path:
    path = required_env("LLMOPS_FIXTURES") / "models" / name
    assert path.is_dir(), f"fixture model {path} is missing: run make setup"
    return path


def safetensors_bytes(tensors: Dict[str, Tensor], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """A safetensors file per the spec: u64 LE header length, JSON header padded with spaces to 8 bytes,
    then the tensors' bytes back to back in header order."""
    header: Dict[str, Any] = {}
    data = b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, payload) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def f32(rng: random.Random, rows: int, cols: int) -> Tensor:
    return ("F32", [rows, cols], rng.randbytes(rows * cols * 4))


def write_model(
    root: Path,
    shards: int = 1,
    tensors_per_shard: int = 3,
    tokenizer: bool = True,
    seed: int = 0,
) -> Dict[str, Dict[str, Tensor]]:
    """A small Llama-shaped model: config.json, tokenizer.json, and 1 safetensors file or `shards` shards
    with model.safetensors.index.json (weight_map + metadata.total_size as transformers writes it)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    if tokenizer:
        (root / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "WordLevel"}}))
    files: Dict[str, Dict[str, Tensor]] = {}
    for s in range(shards):
        name = "model.safetensors" if shards == 1 else f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        files[name] = {f"layers.{s}.w{t}": f32(rng, 8, 4 + t) for t in range(tensors_per_shard)}
        (root / name).write_bytes(safetensors_bytes(files[name], {"format": "pt"}))
    if shards > 1:
        weight_map = {t: name for name, tensors in files.items() for t in tensors}
        total = sum(len(p) for tensors in files.values() for _d, _s, p in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return files


def check(root: Path, **kwargs: Any) -> List[str]:
    files, errors, _warnings = mm.list_files(str(root))
    assert errors == []
    errors, _facts = mm.check_model_dir(str(root), files, **kwargs)
    return errors


def inspect(root: Path, **kwargs: Any) -> Dict[str, Any]:
    return mm.inspect_model_dir(str(root), **kwargs)


def sha256sum(path: Path) -> str:
    """The coreutils tool, as an independent implementation."""
    return subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True).stdout.split()[0]


def copy_model(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


# -- valid models ------------------------------------------------------------------------------------


def test_hand_written_single_file_model_is_valid(tmp_path):
    write_model(tmp_path / "m")
    result = inspect(tmp_path / "m")
    assert result["errors"] == []
    assert result["facts"] == {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "weight_format": "safetensors",
        "sharded": False,
        "tensor_bytes": (8 * 4 + 8 * 5 + 8 * 6) * 4,
        "lora_rank": None,
        "base_model": None,
    }
    assert [e["path"] for e in result["manifest"]] == ["config.json", "model.safetensors", "tokenizer.json"]


def test_hand_written_files_are_what_the_real_safetensors_library_reads(tmp_path):
    """The format written here is the real one, and a truncated copy is refused by the library too."""
    files = write_model(tmp_path / "m", shards=2)
    truncated = tmp_path / "truncated.safetensors"
    data = (tmp_path / "m" / "model-00002-of-00002.safetensors").read_bytes()
    truncated.write_bytes(data[:-10])
    python = required_env("LLMOPS_VLLM_VENV") / "bin" / "python"
    script = r"""
import hashlib, json, sys
from safetensors import safe_open
out = {}
for path in sys.argv[1:]:
    try:
        with safe_open(path, framework="numpy") as f:
            out[path] = {k: hashlib.sha256(f.get_tensor(k).tobytes()).hexdigest() for k in f.keys()}
    except Exception as exc:
        out[path] = "error: " + type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""
    paths = [str(tmp_path / "m" / name) for name in files] + [str(truncated)]
    proc = subprocess.run([str(python), "-c", script, *paths], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    for name, tensors in files.items():
        expected = {t: hashlib.sha256(payload).hexdigest() for t, (_d, _s, payload) in tensors.items()}
        assert loaded[str(tmp_path / "m" / name)] == expected
    assert loaded[str(truncated)].startswith("error:")
    # ... and this module names the same file
    tensors, problems = mm.safetensors_tensors(str(truncated))
    assert tensors is not None and problems
    assert "truncated by 10 bytes" in problems[0]


def test_real_fixture_models_are_valid_and_hashes_match_sha256sum():
    digests = {}
    for name in ("tiny", "tiny-v2", "tiny-broken"):
        root = fixture_model(name)
        result = inspect(root)
        # tiny-broken's files are sound: its head_dim only breaks vLLM's CPU attention, which files cannot show
        assert result["errors"] == [], name
        assert result["facts"]["model_type"] == "llama"
        assert result["facts"]["weight_format"] == "safetensors"
        entries = {e["path"]: e for e in result["manifest"]}
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(entries)
        for path, entry in entries.items():
            assert entry["sha256"] == sha256sum(root / path), path
            assert entry["size"] == (root / path).stat().st_size
        # the tensors fill the file exactly: header length + 8 + tensor bytes == file size
        _header, length, size = mm.read_safetensors_header(str(root / "model.safetensors"))
        assert result["facts"]["tensor_bytes"] == size - 8 - length
        digests[name] = result["content_digest"]
    assert len(set(digests.values())) == 3


def test_content_digest_is_sha256_of_path_size_sha256_lines():
    root = fixture_model("tiny")
    result = inspect(root)
    lines = "".join(
        f"{p}\0{(root / p).stat().st_size}\0{sha256sum(root / p)}\n"
        for p in sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file())
    )
    assert result["content_digest"] == hashlib.sha256(lines.encode()).hexdigest()
    assert result["file_count"] == len(result["manifest"])
    assert result["total_size"] == sum(e["size"] for e in result["manifest"])


def test_digest_does_not_depend_on_mtimes(tmp_path):
    source = fixture_model("tiny")
    copy = copy_model(source, tmp_path / "copy")
    for i, path in enumerate(sorted(copy.iterdir())):
        os.utime(path, ns=(1_000_000_000 * i, 1_000_000_000 * (i + 7)))
    a, b = inspect(source), inspect(copy)
    assert [e["mtime_ns"] for e in a["manifest"]] != [e["mtime_ns"] for e in b["manifest"]]
    assert a["content_digest"] == b["content_digest"]


def test_parallel_and_serial_hashing_agree(tmp_path):
    write_model(tmp_path / "m", shards=4)
    serial = inspect(tmp_path / "m", workers=1, chunk_size=64)
    parallel = inspect(tmp_path / "m", workers=4)
    assert serial["manifest"] == parallel["manifest"]
    assert serial["hashed_files"] == parallel["hashed_files"] == 7  # 4 shards, index, config, tokenizer


# -- config and tokenizer ----------------------------------------------------------------------------


def test_missing_config(tmp_path):
    write_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").unlink()
    assert check(tmp_path / "m") == ["config.json: missing"]


def test_broken_config_json(tmp_path):
    write_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"model_type": "llama",\n "architectures": [')
    errors = check(tmp_path / "m")
    assert len(errors) == 1
    assert errors[0].startswith("config.json: not valid JSON:")
    assert "line 2" in errors[0]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('["llama"]', "config.json: a JSON list, not an object"),
        ('{"hidden_size": 128}', "config.json: has neither model_type nor architectures"),
    ],
)
def test_config_without_model_identity(tmp_path, content, problem):
    write_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(content)
    assert check(tmp_path / "m") == [problem]


def test_missing_tokenizer(tmp_path):
    write_model(tmp_path / "m", tokenizer=False)
    errors = check(tmp_path / "m")
    assert len(errors) == 1
    assert errors[0].startswith("tokenizer: none of tokenizer.json, tokenizer.model")
    assert check(tmp_path / "m", require_tokenizer=False) == []
    (tmp_path / "m" / "tokenizer.model").write_bytes(b"\x0a\x05hello")  # sentencepiece alone is enough
    assert check(tmp_path / "m") == []


def test_cut_off_tokenizer_json_is_named(tmp_path):
    root = copy_model(fixture_model("tiny"), tmp_path / "m")
    text = (root / "tokenizer.json").read_text()
    (root / "tokenizer.json").write_text(text[: len(text) // 2])
    errors = check(root)
    assert len(errors) == 1
    assert errors[0].startswith("tokenizer.json: not valid JSON:")


# -- weights -------------------------------------------------------------------------------------------


def test_no_weights(tmp_path):
    write_model(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    assert check(tmp_path / "m") == ["weights: no *.safetensors file"]


def test_pickle_weights_refused_unless_allowed(tmp_path):
    write_model(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"\x80\x04\x95pickle")
    errors = check(tmp_path / "m")
    assert len(errors) == 1
    assert errors[0].startswith("pytorch_model.bin: pickled weights run code when loaded")
    assert check(tmp_path / "m", allow_pickle=True) == []
    files, _e, _w = mm.list_files(str(tmp_path / "m"))
    assert mm.check_model_dir(str(tmp_path / "m"), files, allow_pickle=True)[1]["weight_format"] == "pickle"


def test_pickle_next_to_safetensors_is_still_refused(tmp_path):
    write_model(tmp_path / "m")
    (tmp_path / "m" / "original").mkdir()
    (tmp_path / "m" / "original" / "consolidated.00.pth").write_bytes(b"\x80\x04")
    assert [e.split(":")[0] for e in check(tmp_path / "m")] == ["original/consolidated.00.pth"]
    assert check(tmp_path / "m", allow_pickle=True) == []
    files, _e, _w = mm.list_files(str(tmp_path / "m"), exclude=["original/**"])
    assert mm.check_model_dir(str(tmp_path / "m"), files)[0] == []


def test_truncated_real_shard_names_the_file(tmp_path):
    root = copy_model(fixture_model("tiny"), tmp_path / "m")
    data = (root / "model.safetensors").read_bytes()
    (root / "model.safetensors").write_bytes(data[:-4096])
    errors = check(root)
    assert errors, "a truncated copy must fail"
    assert all(e.startswith("model.safetensors: ") for e in errors)
    _header, length, _size = mm.read_safetensors_header(str(fixture_model("tiny") / "model.safetensors"))
    assert len(errors) == 1
    assert errors[0].startswith(
        f"model.safetensors: tensors end at byte {len(data) - 8 - length} of the data section but it holds "
        f"{len(data) - 8 - length - 4096}: file truncated by 4096 bytes ("
    )


def test_truncated_into_the_header(tmp_path):
    root = copy_model(fixture_model("tiny"), tmp_path / "m")
    data = (root / "model.safetensors").read_bytes()
    (root / "model.safetensors").write_bytes(data[:100])
    errors = check(root)
    assert len(errors) == 1
    assert "runs past the end of the 100-byte file" in errors[0]
    (root / "model.safetensors").write_bytes(data[:5])
    assert check(root) == ["model.safetensors: 5 bytes, too short for the 8-byte header length"]


def test_flipped_byte_keeps_the_header_valid_but_changes_the_digest(tmp_path):
    source = fixture_model("tiny")
    root = copy_model(source, tmp_path / "m")
    data = bytearray((root / "model.safetensors").read_bytes())
    data[-1000] ^= 0x01
    (root / "model.safetensors").write_bytes(bytes(data))
    assert check(root) == []  # structurally fine: only hashes can tell
    expected, actual = inspect(source), inspect(root)
    assert expected["content_digest"] != actual["content_digest"]
    diff = mm.compare_manifests(actual["manifest"], expected["manifest"])
    assert diff["changed"] == ["model.safetensors"] and diff["missing"] == diff["extra"] == []
    assert diff["errors"] == [
        f"model.safetensors: sha256 {sha256sum(root / 'model.safetensors')} differs from the expected "
        f"{sha256sum(source / 'model.safetensors')}"
    ]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}, "12 bytes but F32 [2, 2] needs 16"),
        ({"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 0]}, "are not [begin, end]"),
        ({"dtype": "F32", "shape": [2, -2], "data_offsets": [0, 16]}, "is not a list of non-negative integers"),
        ({"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16, 3]}, "are not [begin, end]"),
        ("F32", "entry is not an object"),
    ],
)
def test_bad_tensor_entries(tmp_path, entry, problem):
    header = json.dumps({"t": entry}).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    _tensors, problems = mm.safetensors_tensors(str(path))
    assert any(problem in p for p in problems), problems


def test_gaps_overlaps_and_trailing_bytes(tmp_path):
    def layout(offsets: List[Tuple[int, int]], data_size: int) -> List[str]:
        header = {
            f"t{i}": {"dtype": "U8", "shape": [end - begin], "data_offsets": [begin, end]}
            for i, (begin, end) in enumerate(offsets)
        }
        raw = json.dumps(header).encode()
        path = tmp_path / "x.safetensors"
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(data_size))
        return mm.safetensors_tensors(str(path))[1]

    assert layout([(0, 4), (4, 10)], 10) == []
    assert layout([(0, 4), (6, 10)], 10) == ["tensor 't1': 2 unused bytes before it (offset 4)"]
    assert layout([(0, 6), (4, 10)], 10) == ["tensor 't1': overlaps the previous tensor (starts at 4 < 6)"]
    assert layout([(0, 4), (4, 10)], 12) == ["2 bytes after the last tensor (data section 12, tensors end at 10)"]
    assert layout([(2, 4), (4, 10)], 10) == ["tensor 't0': 2 unused bytes before it (offset 0)"]


def test_unreadable_headers(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 6) + b"[1, 2]")
    assert mm.safetensors_tensors(str(path)) == (None, ["header is a JSON list, not an object"])
    path.write_bytes(struct.pack("<Q", 4) + b"{bad")
    tensors, problems = mm.safetensors_tensors(str(path))
    assert tensors is None and problems[0].startswith("header is not valid JSON")
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    assert mm.safetensors_tensors(str(path))[1] == [
        f"header length {2**40} is over the {mm.MAX_HEADER_SIZE}-byte limit"
    ]


# -- sharded models ------------------------------------------------------------------------------------


def test_sharded_model_is_valid(tmp_path):
    write_model(tmp_path / "m", shards=3)
    result = inspect(tmp_path / "m")
    assert result["errors"] == []
    assert result["facts"]["sharded"] is True
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert result["facts"]["tensor_bytes"] == index["metadata"]["total_size"]


def test_sharded_missing_shard(tmp_path):
    write_model(tmp_path / "m", shards=3)
    (tmp_path / "m" / "model-00002-of-00003.safetensors").unlink()
    assert check(tmp_path / "m") == [
        "model-00002-of-00003.safetensors: listed in model.safetensors.index.json (3 tensors) but missing"
    ]


def test_sharded_extra_unlisted_shard(tmp_path):
    write_model(tmp_path / "m", shards=2)
    shard = tmp_path / "m" / "model-00002-of-00002.safetensors"
    shutil.copy(shard, tmp_path / "m" / "model-00003-of-00002.safetensors")
    assert check(tmp_path / "m") == [
        "model-00003-of-00002.safetensors: shard not listed in the weight_map of model.safetensors.index.json"
    ]


def test_sharded_total_size_mismatch(tmp_path):
    write_model(tmp_path / "m", shards=2)
    index_path = tmp_path / "m" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    real = index["metadata"]["total_size"]
    index["metadata"]["total_size"] = real + 4
    index_path.write_text(json.dumps(index))
    assert check(tmp_path / "m") == [
        f"model.safetensors.index.json: metadata.total_size is {real + 4} but the shards' tensors hold {real} bytes"
    ]


def test_sharded_tensor_in_the_wrong_shard(tmp_path):
    write_model(tmp_path / "m", shards=2)
    index_path = tmp_path / "m" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["layers.0.w0"] = "model-00002-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    assert check(tmp_path / "m") == [
        "model-00001-of-00002.safetensors: 1 tensors not in the weight_map of model.safetensors.index.json: "
        "layers.0.w0",
        "model-00002-of-00002.safetensors: 1 tensors model.safetensors.index.json puts here are not in it: layers.0.w0",
    ]


def test_sharded_broken_index(tmp_path):
    write_model(tmp_path / "m", shards=2)
    (tmp_path / "m" / "model.safetensors.index.json").write_text('{"weight_map": ')
    errors = check(tmp_path / "m")
    assert errors[0].startswith("model.safetensors.index.json: not valid JSON")
    # without a readable index no shard counts as listed
    assert errors[1:] == [
        f"model-0000{i}-of-00002.safetensors: shard not listed in the weight_map of model.safetensors.index.json"
        for i in (1, 2)
    ]


def test_truncated_shard_of_a_sharded_model(tmp_path):
    write_model(tmp_path / "m", shards=3)
    shard = tmp_path / "m" / "model-00003-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:-33])
    errors = check(tmp_path / "m")
    assert errors == [
        "model-00003-of-00003.safetensors: tensors end at byte 480 of the data section but it holds 447: "
        "file truncated by 33 bytes (1 tensors past the end, first 'layers.2.w2')"
    ]


# -- listing, excludes, special files ----------------------------------------------------------------


def test_default_excludes_and_nested_files(tmp_path):
    write_model(tmp_path / "m")
    (tmp_path / "m" / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (tmp_path / "m" / ".cache" / "huggingface" / "download" / "model.safetensors.lock").write_text("")
    (tmp_path / "m" / ".llmops-manifest.json").write_text("{}")
    (tmp_path / "m" / "sub").mkdir()
    (tmp_path / "m" / "sub" / ".llmops-x").write_text("kept: the pattern is anchored at the top")
    files, errors, _w = mm.list_files(str(tmp_path / "m"))
    assert errors == []
    assert [f.path for f in files] == ["config.json", "model.safetensors", "sub/.llmops-x", "tokenizer.json"]
    files, _e, _w = mm.list_files(str(tmp_path / "m"), exclude=["*.json"])  # replaces the defaults
    assert [f.path for f in files] == [
        ".cache/huggingface/download/model.safetensors.lock",
        "model.safetensors",
        "sub/.llmops-x",
    ]


def test_symlinks_fifos_and_broken_links(tmp_path):
    blobs = tmp_path / "blobs"
    write_model(blobs)
    snapshot = tmp_path / "snapshot"  # the shape of a Hugging Face cache snapshot: links to blobs
    snapshot.mkdir()
    for path in blobs.iterdir():
        (snapshot / path.name).symlink_to(path)
    result = inspect(snapshot)
    assert result["errors"] == []
    assert result["content_digest"] == inspect(blobs)["content_digest"]
    (snapshot / "dangling.json").symlink_to(tmp_path / "nowhere.json")
    (snapshot / "dirlink").symlink_to(blobs)
    os.mkfifo(snapshot / "pipe")
    files, errors, warnings = mm.list_files(str(snapshot))
    assert errors == [
        f"dangling.json: broken symlink to {str(tmp_path / 'nowhere.json')!r}",
        f"pipe: not a regular file (mode {stat.filemode((snapshot / 'pipe').stat().st_mode)})",
    ]
    assert warnings == ["dirlink: symlink to a directory, not followed"]
    assert "pipe" not in [f.path for f in files]


def test_missing_directory(tmp_path):
    result = inspect(tmp_path / "absent")
    assert result["errors"] == [f"{tmp_path / 'absent'}: does not exist"]
    assert result["manifest"] == [] and result["file_count"] == 0
    (tmp_path / "file").write_text("x")
    assert inspect(tmp_path / "file")["errors"] == [f"{tmp_path / 'file'}: not a directory"]


# -- cache -------------------------------------------------------------------------------------------


def test_cache_reuses_unchanged_files_and_rehashes_a_touched_one(tmp_path):
    root = tmp_path / "m"
    write_model(root, shards=3)
    cache = tmp_path / "cache.json"
    first = inspect(root)
    assert (first["hashed_files"], first["reused_files"]) == (6, 0)  # 3 shards, index, config, tokenizer
    cache.write_text(mm.render_cache(str(root), first["entries"]))

    previous, problem = mm.load_cache(str(cache), str(root))
    assert problem is None and set(previous) == {e["path"] for e in first["manifest"]}
    second = inspect(root, previous=previous)
    assert (second["hashed_files"], second["reused_files"], second["hashed_bytes"]) == (0, 6, 0)
    assert second["manifest"] == first["manifest"]
    assert mm.render_cache(str(root), second["entries"]) == cache.read_text()  # unchanged: same bytes

    touched = root / "model-00002-of-00003.safetensors"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    third = inspect(root, previous=previous)
    assert (third["hashed_files"], third["reused_files"], third["hashed_bytes"]) == (1, 5, st.st_size)
    assert third["content_digest"] == first["content_digest"]


def test_cache_does_not_hide_a_rewrite_with_old_size_and_mtime(tmp_path):
    """Content changed in place, size and mtime restored (as `touch -r` or a careless copy would): ctime moves."""
    root = tmp_path / "m"
    write_model(root)
    first = inspect(root)
    previous = {e["path"]: e for e in first["entries"]}
    target = root / "model.safetensors"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_mtime_ns == st.st_mtime_ns and target.stat().st_size == st.st_size
    again = inspect(root, previous=previous)
    assert again["hashed_files"] == 1
    assert again["content_digest"] != first["content_digest"]


def test_cache_of_another_directory_is_not_used(tmp_path):
    source = tmp_path / "source"
    write_model(source)
    cache = tmp_path / "cache.json"
    cache.write_text(mm.render_cache(str(source), inspect(source)["entries"]))
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)  # copy2: same sizes and mtimes
    previous, problem = mm.load_cache(str(cache), str(copy))
    assert previous == {}
    assert problem == f"cache file {cache} belongs to {str(source.resolve())!r}, hashing everything"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "is unreadable"),
        ('{"format": "other"}', "is not a llmops.platform.model_manifest/1 cache"),
        ("[]", "is not a llmops.platform.model_manifest/1 cache"),
    ],
)
def test_unusable_cache_files(tmp_path, content, why):
    cache = tmp_path / "cache.json"
    cache.write_text(content)
    previous, problem = mm.load_cache(str(cache), str(tmp_path))
    assert previous == {} and why in problem
    assert mm.load_cache(str(tmp_path / "absent.json"), str(tmp_path)) == ({}, None)


def test_damaged_cache_entries_are_skipped(tmp_path):
    root = tmp_path / "m"
    write_model(root)
    document = json.loads(mm.render_cache(str(root), inspect(root)["entries"]))
    document["manifest"][0]["sha256"] = "short"
    del document["manifest"][1]["size"]
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps(document))
    previous, _problem = mm.load_cache(str(cache), str(root))
    assert set(previous) == {"tokenizer.json"}
    assert inspect(root, previous=previous)["hashed_files"] == 2


def test_write_atomic_leaves_no_temporary_files(tmp_path):
    mm.write_atomic(str(tmp_path / "c.json"), "one\n")
    mm.write_atomic(str(tmp_path / "c.json"), "two\n")
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]
    assert (tmp_path / "c.json").read_text() == "two\n"


# -- expected manifests --------------------------------------------------------------------------------


def test_compare_manifests_lists_missing_extra_and_changed():
    expected = [
        {"path": "a", "size": 1, "sha256": "1" * 64},
        {"path": "b", "size": 2, "sha256": "2" * 64},
        {"path": "c", "size": 3, "sha256": "3" * 64},
    ]
    actual = [
        {"path": "a", "size": 1, "sha256": "1" * 64, "mtime_ns": 5},
        {"path": "b", "size": 20, "sha256": "9" * 64},
        {"path": "d", "size": 4, "sha256": "4" * 64},
    ]
    diff = mm.compare_manifests(actual, expected)
    assert (diff["missing"], diff["extra"], diff["changed"]) == (["c"], ["d"], ["b"])
    assert diff["errors"] == [
        f"c: missing (expected 3 bytes, sha256 {'3' * 64})",
        "d: not in the expected manifest (4 bytes)",
        "b: size 20 differs from the expected 2",
    ]


def test_normalize_expected_accepts_a_result_or_a_list():
    entries = [{"path": "a", "size": "1", "sha256": "f" * 64, "mtime_ns": 3}]
    assert mm.normalize_expected(entries) == [{"path": "a", "size": 1, "sha256": "f" * 64}]
    assert mm.normalize_expected({"manifest": entries, "content_digest": "x"}) == mm.normalize_expected(entries)
    with pytest.raises(ValueError, match="without a 'manifest' key"):
        mm.normalize_expected({"files": []})
    with pytest.raises(ValueError, match="must be a list"):
        mm.normalize_expected("abc")
    with pytest.raises(ValueError, match="entry 0 needs path, size and sha256"):
        mm.normalize_expected([{"path": "a"}])


# -- LoRA adapters (kind lora_adapter) ---------------------------------------------------------------------


def write_adapter(root: Path, rank: Any = 8, peft_type: str = "LORA", seed: int = 0) -> Path:
    """What PEFT saves (llamafactory-cli train's output_dir): adapter_config.json and adapter_model.safetensors."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": peft_type, "r": rank, "lora_alpha": 16, "base_model_name_or_path": "/models/tiny"}
    (root / "adapter_config.json").write_text(json.dumps(config))
    tensors = {
        "base_model.model.layers.0.q_proj.lora_A.weight": f32(rng, 8, 16),
        "base_model.model.layers.0.q_proj.lora_B.weight": f32(rng, 16, 8),
    }
    (root / "adapter_model.safetensors").write_bytes(safetensors_bytes(tensors, {"format": "pt"}))
    return root


def test_a_lora_adapter_is_valid_as_an_adapter_and_not_as_a_model(tmp_path):
    adapter = write_adapter(tmp_path / "adapter")
    files, _errors, _warnings = mm.list_files(str(adapter))
    errors, facts = mm.check_model_dir(str(adapter), files, kind="lora_adapter")
    assert errors == []
    assert (facts["lora_rank"], facts["base_model"], facts["weight_format"]) == (8, "/models/tiny", "safetensors")
    assert "config.json: missing" in check(adapter)
    result = inspect(adapter, kind="lora_adapter")
    assert result["errors"] == [] and result["content_digest"] == inspect(adapter)["content_digest"]
    # a different adapter is a different version
    other = inspect(write_adapter(tmp_path / "other", seed=1), kind="lora_adapter")
    assert other["content_digest"] != result["content_digest"]


@pytest.mark.parametrize(
    ("rank", "peft_type", "problem"),
    [(0, "LORA", "r (the LoRA rank) is 0"), ("8", "LORA", "r (the LoRA rank) is '8'"), (8, "IA3", "not LORA")],
)
def test_bad_adapter_configs_are_named(tmp_path, rank, peft_type, problem):
    adapter = write_adapter(tmp_path / "adapter", rank=rank, peft_type=peft_type)
    assert any(problem in e for e in check(adapter, kind="lora_adapter")), check(adapter, kind="lora_adapter")


def test_an_adapter_without_its_config_or_weights_fails(tmp_path):
    adapter = write_adapter(tmp_path / "adapter")
    (adapter / "adapter_model.safetensors").unlink()
    assert any(e.startswith("weights: no *.safetensors") for e in check(adapter, kind="lora_adapter"))
    (adapter / "adapter_config.json").unlink()
    assert any(e.startswith("adapter_config.json: missing") for e in check(adapter, kind="lora_adapter"))
    with pytest.raises(ValueError, match="kind must be one of"):
        check(adapter, kind="adapter")


def test_a_trainers_leftovers_are_not_part_of_an_adapter(tmp_path):
    """LLaMA-Factory's output_dir also holds checkpoint-N/ (optimizer state) and training_args.bin, pickled."""
    adapter = write_adapter(tmp_path / "adapter")
    clean = inspect(adapter, kind="lora_adapter")["content_digest"]
    (adapter / "checkpoint-4").mkdir()
    for name in ("checkpoint-4/optimizer.pt", "checkpoint-4/adapter_model.safetensors", "training_args.bin"):
        (adapter / name).write_bytes(b"pickled")
    result = inspect(adapter, kind="lora_adapter")
    assert result["errors"] == [] and result["content_digest"] == clean
    assert any("pickled weights" in e for e in inspect(adapter)["errors"])  # as a model they count


def test_model_sync_copies_what_an_adapters_manifest_lists():
    """roles/model_sync's rsync excludes for adapters are ADAPTER_EXCLUDE, anchored at the top, in rsync's syntax."""
    variables = yaml.safe_load((ROOT / "roles" / "model_sync" / "vars" / "main.yml").read_text())
    rsync = variables["_model_sync_adapter_exclude"]
    assert [p.lstrip("/").replace("/", "/**") for p in rsync] == list(mm.ADAPTER_EXCLUDE)
