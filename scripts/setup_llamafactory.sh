#!/usr/bin/env bash
# Build the LLaMA-Factory CPU virtualenv that tests/integration/test_llamafactory_real.py runs:
# llamafactory 0.9.5 on the CPU torch 2.13.0 plus MLflow 3.17.2 (tracking server and client), all from
# requirements/llamafactory.lock. Once per machine under $LLMOPS_CACHE, keyed by the lock's sha256;
# a second run with an unchanged lock does nothing. See docs/testing-llamafactory.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$LLMOPS_ROOT"

# scripts/lib.sh defines LLMOPS_LF_VENV; the same default here keeps this script usable on its own.
LLMOPS_LF_VENV="${LLMOPS_LF_VENV:-$LLMOPS_CACHE/venv-llamafactory-$(_llmops_hash requirements/llamafactory.lock)}"

install_llamafactory() {
    local venv=$1 site problems
    # torch first, from the CPU wheel on this machine's disk (pip's find-links); then the whole lock with
    # --no-deps so pip never resolves llamafactory's unbounded torch/torchvision/torchaudio requirements
    # (unpinned they pull a multi-GB CUDA build).
    "$venv/bin/pip" install --quiet torch==2.13.0
    "$venv/bin/pip" install --quiet --no-deps -r requirements/llamafactory.lock
    # torchaudio's extension libraries are CUDA builds (libc10_cuda.so) and fail to load beside the CPU
    # torch; without them torchaudio imports its pure-Python parts, which is all LLaMA-Factory's text
    # training touches (it imports torchaudio at start-up for audio datasets).
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    rm -f "$site"/torchaudio/lib/*.so
    # The only unmet requirement pip may report is torchvision, left out of the lock on purpose.
    problems=$("$venv/bin/pip" check 2>&1 | grep -v -i -e torchvision -e 'no broken requirements' || true)
    if [ -n "$problems" ]; then
        llmops_log "pip check reports broken requirements in $venv: $problems"
        return 1
    fi
    "$venv/bin/python" -c 'import torchaudio, llamafactory, mlflow, mlflow.server, peft, trl'
    "$venv/bin/llamafactory-cli" version >/dev/null
    "$venv/bin/mlflow" --version >/dev/null
}

if [ ! -f "$LLMOPS_LF_VENV/.llmops-complete" ]; then
    rm -rf "$LLMOPS_LF_VENV"
    mkdir -p "$LLMOPS_CACHE"
    llmops_log "creating $LLMOPS_LF_VENV (LLaMA-Factory + MLflow, once per machine; ~2 min, ~2.3 GB)"
    python3 -m venv "$LLMOPS_LF_VENV"
    install_llamafactory "$LLMOPS_LF_VENV"
    touch "$LLMOPS_LF_VENV/.llmops-complete"
fi
llmops_log "LLaMA-Factory venv ready: $LLMOPS_LF_VENV"
