# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Can the serving side's libraries load a model directory as it was saved?

A model written by the training side's transformers may not load in the serving side's: a tokenizer saved by
transformers 5 names its class ``TokenizersBackend``, which transformers 4.x (pinned by older vLLM releases) does
not know, and a ``model_type`` newer than the serving transformers fails in ``AutoConfig``. vLLM only finds out
when it starts, after the switch. This module runs the serving environment's own Python (the vLLM virtualenv's)
on the directory, offline and without remote code, loads the config and the tokenizer and encodes a text, and
explains a failure with what the files say they were saved by.
"""

from __future__ import annotations

import json
import os

CHECKS = ("config", "tokenizer", "architecture")

# Runs in the serving environment's interpreter: argv = [path, comma-separated checks]. Prints one JSON object.
PROBE = r"""
import json, sys
path, checks = sys.argv[1], sys.argv[2].split(",")
out = {"python": sys.executable, "errors": {}}
try:
    import transformers
except Exception as exc:
    out["errors"]["transformers"] = "%s: %s" % (type(exc).__name__, exc)
    print(json.dumps(out))
    sys.exit(0)
out["transformers_version"] = transformers.__version__
config = None
if "config" in checks or "architecture" in checks:
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        out["model_type"] = getattr(config, "model_type", None)
        out["architectures"] = list(getattr(config, "architectures", None) or [])
    except Exception as exc:
        out["errors"]["config"] = "%s: %s" % (type(exc).__name__, exc)
if "tokenizer" in checks:
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        out["tokenizer_class"] = type(tokenizer).__name__
        ids = tokenizer("Hello, world")["input_ids"]
        if not ids:
            raise ValueError("the tokenizer encodes a text into no tokens")
        out["encoded_tokens"] = len(ids)
    except Exception as exc:
        out["errors"]["tokenizer"] = "%s: %s" % (type(exc).__name__, exc)
if "architecture" in checks and config is not None:
    try:
        import vllm
        from vllm.model_executor.models import ModelRegistry
        out["vllm_version"] = vllm.__version__
        supported = set(ModelRegistry.get_supported_archs())
        wanted = out.get("architectures") or []
        if not any(arch in supported for arch in wanted):
            raise ValueError("vLLM %s supports none of the architectures %s" % (vllm.__version__, wanted))
    except Exception as exc:
        out["errors"]["architecture"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(out))
"""


def saved_with(path: str) -> dict:
    """What the files of a model directory say about how they were saved (missing or unreadable files: nothing)."""
    found = {}
    for name, keys in (
        ("config.json", ("transformers_version", "model_type", "architectures")),
        ("tokenizer_config.json", ("tokenizer_class",)),
    ):
        try:
            with open(os.path.join(path, name), encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            for key in keys:
                if data.get(key) is not None:
                    found[key] = data[key]
    return found


def explain(path: str, report: dict, saved: dict) -> str:
    """One message naming every failed check, what the files were saved with and what the environment has."""
    environment = "transformers {}".format(report.get("transformers_version", "(not importable)"))
    if report.get("vllm_version"):
        environment += ", vLLM {}".format(report["vllm_version"])
    parts = [f"{check}: {error}" for check, error in sorted(report.get("errors", {}).items())]
    hints = []
    if saved.get("transformers_version"):
        hints.append("config.json was saved by transformers {}".format(saved["transformers_version"]))
    if "tokenizer" in report.get("errors", {}) and saved.get("tokenizer_class"):
        hints.append("tokenizer_config.json names tokenizer_class {!r}".format(saved["tokenizer_class"]))
    if "config" in report.get("errors", {}) and saved.get("model_type"):
        hints.append("config.json names model_type {!r}".format(saved["model_type"]))
    message = "The serving environment ({}, {}) cannot load the model in {} as it was saved: {}.".format(
        report.get("python", "?"), environment, path, "; ".join(parts)
    )
    if hints:
        message += " " + "; ".join(hints) + "."
    message += (
        " Save the model with a transformers release the serving side knows (or re-save its tokenizer with it), or"
        " serve it with a vLLM release whose transformers loads it."
    )
    return message
