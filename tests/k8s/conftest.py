"""Fixtures for tests/k8s (the Kubernetes API emulator harness). They live in k8s_harness.py so
tests elsewhere can import them too."""

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import k8s_harness  # noqa: E402

# Registers the fixture for tests/k8s (pytest finds fixtures by module attribute).
k8s_emulator = k8s_harness.k8s_emulator
