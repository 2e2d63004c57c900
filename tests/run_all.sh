#!/usr/bin/env bash
# The whole test suite, stage by stage (run through scripts/run, i.e. `make test`):
#   lint         yamllint, ansible-lint (production profile), ruff, argument specs == defaults
#   sanity       ansible-test sanity with empty ignore files
#   unit         pytest tests/unit
#   integration  pytest tests/integration tests/hosts tests/k8s (real vLLM CPU server, systemd test
#                hosts, the Kubernetes API emulator)
#   molecule     molecule scenarios (real systemd hosts in nspawn, Kubernetes API emulator)
# `tests/run_all.sh STAGE...` runs only those stages.
set -uo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$LLMOPS_ROOT" || exit 1

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(lint sanity unit integration molecule)
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

stage_integration() {
    # tests/hosts: the nspawn test-host driver itself; tests/k8s: the Kubernetes API emulator harness.
    python -m pytest -q -p no:cacheprovider tests/integration tests/hosts tests/k8s
}

stage_molecule() {
    local found=0 rc=0
    for scenario in molecule/*/molecule.yml; do
        [ -e "$scenario" ] || continue
        found=1
        name=$(basename "$(dirname "$scenario")")
        llmops_log "molecule test -s $name"
        molecule test -s "$name" || rc=1
    done
    [ $found -eq 1 ] || llmops_log "no molecule scenarios yet"
    return $rc
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
