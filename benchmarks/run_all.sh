#!/usr/bin/env bash
# Every benchmark, one after another (`make benchmarks`, or `scripts/run bash benchmarks/run_all.sh`).
#
#   benchmarks/run_all.sh [--full] [--timeout SECONDS] [--list] [--help-only] [NAME...]
#
# Every benchmarks/*.py that has an `if __name__ == "__main__":` block is a benchmark (files starting
# with `_` are helpers and skipped), so a new script is picked up without editing this file. NAMEs
# (`cold_sync` or `cold_sync.py`) run only those. By default each runs with the quick settings of the
# QUICK table below (smaller models, fewer runs: the figures are indicative only); a script not in the
# table runs with its own defaults. The figures docs/testing.md quotes come from the scripts' own
# defaults: --full.
#
#   --full          no quick settings: each script's own defaults (much longer)
#   --timeout S     stop a benchmark after S seconds (SIGINT first, so it tears its test hosts down)
#   --list          print what would run, with its arguments, and exit
#   --help-only     run each benchmark with --help only (a quick check that every script starts)
#   LLMOPS_BENCH_ARGS_<name>="..."  replaces the arguments of one benchmark, e.g.
#                   LLMOPS_BENCH_ARGS_readiness_lag="--runs 5" benchmarks/run_all.sh readiness_lag
#
# The benchmarks that boot test hosts (systemd-nspawn) need root and an otherwise idle machine; see
# docs/testing-hosts.md. A failing benchmark does not stop the others; the exit status is non-zero if
# any failed, and the summary names them. Each one's output is also kept in
# $LLMOPS_CACHE/benchmarks/<date>/<name>.log.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Through the project's toolchain (python, ansible-playbook of the tools virtualenv), whichever way it
# was started.
if [ -z "${LLMOPS_TOOLS_VENV:-}" ] || [ "${VIRTUAL_ENV:-}" != "$LLMOPS_TOOLS_VENV" ]; then
    exec "$here/../scripts/run" bash "$here/run_all.sh" "$@"
fi
# shellcheck source-path=SCRIPTDIR source=../scripts/lib.sh disable=SC1091
source "$here/../scripts/lib.sh"
cd "$LLMOPS_ROOT" || exit 1

# Quick settings per benchmark (file name without .py). Keep them to options the script's --help lists.
declare -A QUICK=(
    [cold_sync]="--size-gib 0.5 --shards 4 --repeat 1 --resyncs 2"
    [external_rerun]="--runs 1"
    [fleet_sync]="--size-mib 128"
    [manifest_hashing]="--size-gib 0.25 --repeat 1"
    [readiness_lag]="--runs 3"
)

usage() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; }

full=0 list=0 help_only=0 timeout_s=""
names=()
while [ $# -gt 0 ]; do
    case "$1" in
        --full) full=1 ;;
        --list) list=1 ;;
        --help-only) help_only=1 ;;
        --timeout)
            [ $# -ge 2 ] || { echo "--timeout needs SECONDS" >&2; exit 2; }
            timeout_s="$2"
            shift
            ;;
        --timeout=*) timeout_s="${1#--timeout=}" ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
        *) names+=("$(basename "${1%.py}")") ;;
    esac
    shift
done
if [ -n "$timeout_s" ] && ! [[ "$timeout_s" =~ ^[1-9][0-9]*$ ]]; then
    echo "--timeout wants whole seconds, got: $timeout_s" >&2
    exit 2
fi

# Discover the benchmarks.
benchmarks=()
for script in benchmarks/*.py; do
    [ -e "$script" ] || continue
    name="$(basename "$script" .py)"
    [[ "$name" == _* ]] && continue
    grep -q '^if __name__ == "__main__":' "$script" || continue
    benchmarks+=("$name")
done
if [ ${#names[@]} -gt 0 ]; then
    for name in "${names[@]}"; do
        if [ ! -e "benchmarks/$name.py" ]; then
            echo "no benchmark benchmarks/$name.py (have: ${benchmarks[*]})" >&2
            exit 2
        fi
    done
    benchmarks=("${names[@]}")
fi
[ ${#benchmarks[@]} -gt 0 ] || { echo "no benchmarks found in benchmarks/" >&2; exit 2; }

# The arguments of one benchmark, into the array `args` (and `shown`, for printing).
arguments_of() {
    local name="$1" override_var="LLMOPS_BENCH_ARGS_${1//[^A-Za-z0-9_]/_}" line=""
    if [ "$help_only" -eq 1 ]; then
        line="--help"
    elif [ -n "${!override_var+set}" ]; then
        line="${!override_var}"
    elif [ "$full" -eq 0 ]; then
        line="${QUICK[$name]:-}"
    fi
    read -r -a args <<<"$line"
    shown=""
    [ ${#args[@]} -eq 0 ] || shown=" ${args[*]}"
}

if [ "$list" -eq 1 ]; then
    for name in "${benchmarks[@]}"; do
        arguments_of "$name"
        printf 'python benchmarks/%s.py%s\n' "$name" "$shown"
    done
    exit 0
fi

mkdir -p "$LLMOPS_CACHE/benchmarks" || exit 1
log_dir="$(mktemp -d "$LLMOPS_CACHE/benchmarks/$(date +%Y%m%d-%H%M%S)-XXXX")" || exit 1
runner=()
# --foreground: the benchmark stays in this terminal's process group, so Ctrl-C still reaches it.
[ -z "$timeout_s" ] || runner=(timeout --foreground --signal=INT --kill-after=120 "$timeout_s")
# Ctrl-C: the running benchmark gets it too (and tears its test hosts down); no further one starts.
interrupted=0
trap 'interrupted=1' INT

failed=()
summary=()
total_start=$EPOCHREALTIME
for name in "${benchmarks[@]}"; do
    arguments_of "$name"
    printf '\n===== %s (%(%H:%M:%S)T): python benchmarks/%s.py%s =====\n' \
        "$name" -1 "$name" "$shown"
    start=$EPOCHREALTIME
    "${runner[@]}" python "benchmarks/$name.py" "${args[@]}" 2>&1 | tee -i "$log_dir/$name.log"
    rc=${PIPESTATUS[0]}
    wall=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" -eq 0 ]; then
        summary+=("$name: ok in $wall s")
    else
        [ -z "$timeout_s" ] || [ "$rc" -ne 124 ] || rc="124, timed out after $timeout_s s"
        summary+=("$name: FAILED (rc $rc) after $wall s")
        failed+=("$name")
    fi
    printf '===== %s: %s =====\n' "$name" "${summary[-1]#"$name: "}"
    if [ "$interrupted" -eq 1 ]; then
        summary+=("interrupted: the benchmarks after $name did not run")
        break
    fi
done

printf '\n=== benchmarks: summary (%s s in all; logs in %s) ===\n' \
    "$(awk -v a="$total_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')" "$log_dir"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    printf 'failed benchmarks: %s\n' "${failed[*]}"
fi
[ "$interrupted" -eq 0 ] || exit 130
[ ${#failed[@]} -eq 0 ] || exit 1
