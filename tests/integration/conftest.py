"""Registers the integration fixtures; the helpers themselves live in itest_support.py."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import itest_support  # noqa: E402

# pytest registers the fixtures found in a conftest's namespace.
run_module = itest_support.run_module
run_playbook = itest_support.run_playbook
start_playbook = itest_support.start_playbook
vllm_servers = itest_support.vllm_servers
vllm_servers_session = itest_support.vllm_servers_session
