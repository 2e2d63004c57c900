"""model_load_check's message: what failed, what the files say they were saved with, what the environment has.
The checks themselves run real transformers in tests/integration/test_model_load_check.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.llmops.platform.plugins.module_utils.model_load_check import (  # noqa: E402
    explain,
    saved_with,
)


def test_saved_with_reads_the_config_and_the_tokenizer_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"transformers_version": "5.6.0", "model_type": "llama"}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend"}))
    assert saved_with(str(tmp_path)) == {
        "transformers_version": "5.6.0",
        "model_type": "llama",
        "tokenizer_class": "TokenizersBackend",
    }


def test_saved_with_ignores_missing_and_broken_files(tmp_path):
    assert saved_with(str(tmp_path)) == {}
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "tokenizer_config.json").write_text("[1, 2]")
    assert saved_with(str(tmp_path)) == {}


def test_explain_names_the_failed_check_both_releases_and_the_saved_class():
    report = {
        "python": "/opt/vllm/venv/bin/python",
        "transformers_version": "4.57.1",
        "errors": {"tokenizer": "ValueError: Tokenizer class TokenizersBackend does not exist"},
    }
    saved = {"transformers_version": "5.6.0", "tokenizer_class": "TokenizersBackend", "model_type": "llama"}
    message = explain("/srv/models/v1", report, saved)
    assert "(/opt/vllm/venv/bin/python, transformers 4.57.1)" in message
    assert "cannot load the model in /srv/models/v1" in message
    assert "tokenizer: ValueError: Tokenizer class TokenizersBackend does not exist" in message
    assert "config.json was saved by transformers 5.6.0" in message
    assert "tokenizer_config.json names tokenizer_class 'TokenizersBackend'" in message
    # The config loaded: its model_type is no hint here.
    assert "model_type" not in message


def test_explain_without_transformers_says_so():
    message = explain("/m", {"python": "/p", "errors": {"transformers": "ModuleNotFoundError: transformers"}}, {})
    assert "transformers (not importable)" in message and "transformers: ModuleNotFoundError" in message
