#!/usr/bin/env bash
# The whole test suite, stage by stage (run through scripts/run, i.e. `make test`):
#   lint         yamllint, ansible-lint (production profile), ruff, argument specs == defaults
#   sanity       ansible-test sanity with empty ignore files
#   unit         pytest tests/unit
#   integration  pytest tests/integration tests/hosts tests/k8s tests/molecule (real vLLM CPU server, systemd
#                test hosts, the Kubernetes API emulator and its test node, every molecule scenario), in
#                parallel workers
#   molecule     only the molecule scenarios (real systemd hosts in nspawn, Kubernetes API emulator)
# `tests/run_all.sh STAGE...` runs only those stages.
set -uo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$LLMOPS_ROOT" || exit 1

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(lint sanity unit integration)
failed=()
summary=()

stage_lint() {
    yamllint -s . &&
    ansible-lint --strict -q &&
    ruff check . &&
    ruff format --check . &&
    python tests/check_argument_specs.py
}

stage_sanity() {
    # ansible-test needs the collection at .../ansible_collections/llmops/platform: test a copy of
    # exactly the files git would ship (tracked or not ignored).
    local dest="$LLMOPS_CACHE/sanity/ansible_collections/llmops/platform"
    rm -rf "$dest" && mkdir -p "$dest"
    git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$dest"
    (cd "$dest" && ansible-test sanity --venv --python 3.11 --color no)
}

stage_unit() {
    python -m pytest -q tests/unit
}

# Integration tests and molecule scenarios share one pool of pytest-xdist workers (LLMOPS_TEST_WORKERS, default:
# the CPU count, at least 2 and at most 4). One worker leaves a CPU idle about half the time (hosts booting, a
# host's pip install, vLLM loading, Jobs running), so a second worker takes most of that idle time. Each test
# file stays on one worker (its module fixtures, a booted fleet or the internal cluster, are built once), each
# molecule scenario is a unit of its own, and the longest start first (tests/conftest.py:
# pytest_xdist_make_scheduler, TEST_FILE_SECONDS), so the long ones overlap.
# Every set of test hosts, every emulator and every test node names and numbers its own resources; the one thing
# they would share is the wheelhouse server that a set's destroy stops, so one server (and the test bridge) is
# held up here for the whole stage.
test_workers() {
    if [ -n "${LLMOPS_TEST_WORKERS:-}" ]; then
        [[ "$LLMOPS_TEST_WORKERS" =~ ^[1-9][0-9]*$ ]] || {
            llmops_log "LLMOPS_TEST_WORKERS must be a whole number of workers >= 1, not '$LLMOPS_TEST_WORKERS'"
            return 1
        }
        echo "$LLMOPS_TEST_WORKERS"
        return 0
    fi
    local n
    n=$(nproc)
    [ "$n" -ge 2 ] || n=2
    [ "$n" -le 4 ] || n=4
    echo "$n"
}

pool_pytest() {
    local held="$LLMOPS_CACHE/test-hosts/shared-wheelhouse" rc workers layer=0
    [ "${1:-}" = --vllm-layer ] && { layer=1; shift; }
    workers=$(test_workers) || return 1
    python tests/hosts/nspawn_hosts.py create --prefix shared-wheelhouse --count 0 --state-dir "$held" \
        --wheelhouse >/dev/null || return 1
    # The test hosts of tests/integration/hosts start with vLLM installed (tests/hosts/vllm_layer.py: made
    # once per machine by the role itself); the molecule scenario installs from scratch.
    if [ "$layer" = 1 ]; then
        LLMOPS_TEST_VLLM_LAYER=$(python tests/hosts/vllm_layer.py ensure) || {
            python tests/hosts/nspawn_hosts.py destroy --prefix shared-wheelhouse --state-dir "$held" >/dev/null
            return 1
        }
        export LLMOPS_TEST_VLLM_LAYER
    fi
    python -m pytest -v -p no:cacheprovider -n "$workers" --no-loadscope-reorder \
        --durations=30 "$@"
    rc=$?
    python tests/hosts/nspawn_hosts.py destroy --prefix shared-wheelhouse --state-dir "$held" >/dev/null
    return $rc
}

stage_integration() {
    # tests/hosts: the nspawn test-host driver itself; tests/k8s: the Kubernetes API emulator harness;
    # tests/molecule: every molecule scenario (molecule test -s NAME), one test each.
    pool_pytest --vllm-layer tests/integration tests/hosts tests/k8s tests/molecule
}

stage_molecule() {
    # Only the molecule scenarios (the integration stage runs them too).
    pool_pytest tests/molecule
}

for stage in "${stages[@]}"; do
    llmops_log "=== stage $stage ==="
    start=$SECONDS
    if "stage_$stage"; then
        summary+=("$stage: passed in $((SECONDS - start)) s")
    else
        summary+=("$stage: FAILED after $((SECONDS - start)) s")
        failed+=("$stage")
    fi
done

printf '\n=== summary ===\n'
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    printf 'failed stages: %s\n' "${failed[*]}"
    exit 1
fi
