#!/usr/bin/env bash
# `make demo`: the external layout (ADR-002 option A) on a local systemd test host.
# Boots a Debian 12 host with systemd-nspawn (reached over SSH like any server), deploys vLLM with the
# production playbook playbooks/external.yml (cpu profile, tiny model, offline wheelhouse), then prints
# the health report and one chat completion. The host stays up for you to explore; remove it with
#   python3 tests/hosts/nspawn_hosts.py destroy --prefix demo --state-dir "$LLMOPS_CACHE/demo"
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$LLMOPS_ROOT"

state="$LLMOPS_CACHE/demo"
host=vllm-demo
# The demo host's API key: generated once, kept 0600 in the state dir, so a re-run changes nothing.
mkdir -p "$state"
if [ -z "${LLMOPS_DEMO_API_KEY:-}" ]; then
    [ -s "$state/api-key" ] || (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' > "$state/api-key")
    LLMOPS_DEMO_API_KEY=$(cat "$state/api-key")
fi
export LLMOPS_DEMO_API_KEY
# The demo host's certificate comes from a local CA kept in the state dir (inventories/demo).
export LLMOPS_TLS_CA_DIR="$state/tls"

llmops_log "booting the test host $host (Debian 12, systemd, SSH)"
python3 tests/hosts/nspawn_hosts.py create --prefix demo --state-dir "$state" --host "$host" \
    --wheelhouse >/dev/null
printf -- '---\nvllm_hosts:\n  hosts:\n    %s:\n' "$host" > "$state/groups.yml"

llmops_log "deploying with playbooks/external.yml (first run installs vLLM on the host: a few minutes)"
ansible-playbook -i inventories/demo -i "$state/inventory.yml" -i "$state/groups.yml" playbooks/external.yml

address=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["hosts"][sys.argv[2]]["ip"])' \
    "$state/state.json" "$host")
llmops_log "one chat completion from https://$address:8000 (OpenAI client over TLS verified with $LLMOPS_TLS_CA_DIR/ca.pem, API key from the environment)"
OPENAI_API_KEY="$LLMOPS_DEMO_API_KEY" python - "$address" "$LLMOPS_TLS_CA_DIR/ca.pem" <<'PY'
import ssl
import sys

from openai import DefaultHttpxClient, OpenAI

tls = ssl.create_default_context(cafile=sys.argv[2])
client = OpenAI(base_url=f"https://{sys.argv[1]}:8000/v1", http_client=DefaultHttpxClient(verify=tls))
reply = client.chat.completions.create(
    model="tiny", messages=[{"role": "user", "content": "hello world"}], max_tokens=12, temperature=0
)
print(f"model={reply.model} finish_reason={reply.choices[0].finish_reason} usage={reply.usage.total_tokens} tokens")
print(f"answer: {reply.choices[0].message.content.strip()!r}")
PY
llmops_log "without the key, every route but /health answers 401 (the TLS and API-key front, HAProxy)"
for route in /v1/models /invocations /tokenize /version /health; do
    printf '  %-12s HTTP %s\n' "$route" "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$LLMOPS_TLS_CA_DIR/ca.pem" "https://$address:8000$route")"
done
llmops_log "the hardened unit's exposure (systemd-analyze security; lower is better, the target is 3.0 or lower)"
ansible -i "$state/inventory.yml" "$host" -m ansible.builtin.command \
    -a "systemd-analyze security --no-pager vllm@main.service" 2>/dev/null | grep -E "Overall exposure" || true
llmops_log "done; the host keeps serving. Remove it with: python3 tests/hosts/nspawn_hosts.py destroy --prefix demo --state-dir $state"
