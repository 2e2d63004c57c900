# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Liveness watchdog of one vLLM instance: vllm-watchdog@NAME.service, started by its timer.

A hung engine keeps /health at 200 while every completion times out, so this probe sends a real
one-token completion straight to the engine. After WATCHDOG_FAILURES consecutive failures it kills the
instance (SIGKILL: a hung engine cannot drain, and SIGTERM would wait out TimeoutStopSec) and systemd's
Restart=on-failure starts it again. Every decision is written to the journal with its reason.

It never fights a deliberate action: it does nothing while the unit is not active (stopped, starting,
stopping, restarting), while a maintenance marker exists (the role writes one around drains and
restarts; an operator can too: touch /run/vllm/maintenance/NAME), and it does not count failures of a
freshly started engine until that engine has answered once or WATCHDOG_START_GRACE seconds passed.

A probe that fails while the engine's token counters (its /metrics) still move is a busy engine, not a
hung one: it is logged and not counted, so saturation never gets an instance killed.

Settings come from the environment (EnvironmentFile=): WATCHDOG_URL, WATCHDOG_MODEL, WATCHDOG_TIMEOUT,
WATCHDOG_FAILURES, WATCHDOG_START_GRACE, WATCHDOG_MAINTENANCE_DIR, WATCHDOG_MAINTENANCE_MAX_AGE,
WATCHDOG_STATE_DIR, and VLLM_API_KEY from the instance's own 0600 environment file (never argv).
Standard library only.

`vllm-watchdog --liveness` is the same probe as a Kubernetes exec liveness probe (role vllm_k8s mounts this
file from a ConfigMap): exit 0 when the completion answers, when the probe proves nothing (401/403) or when
it fails while the token counters move (busy, not hung); exit 1 otherwise. The kubelet counts the
failures (failureThreshold) and restarts the container; the startup probe covers the model load. The only
state is the last token count, in WATCHDOG_STATE_DIR (an emptyDir).
"""

import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

# sd-daemon(3) priority prefixes: the journal records each line at that priority.
ERR, WARNING, NOTICE, INFO = "<3>", "<4>", "<5>", "<6>"


def log(priority, message):
    print(priority + message, flush=True)


def unit_state(unit):
    out = subprocess.run(
        ["systemctl", "show", unit, "--property=ActiveState,SubState,MainPID,ExecMainStartTimestampMonotonic"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    state = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {
        "active": state.get("ActiveState", ""),
        "sub": state.get("SubState", ""),
        "pid": int(state.get("MainPID", "0") or 0),
        "started": int(state.get("ExecMainStartTimestampMonotonic", "0") or 0),
    }


def monotonic_usec():
    return int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000)


def probe(url, model, key, timeout):
    """(ok, reason): a one-token completion answered with a choice; ok is None when the probe proves nothing."""
    body = json.dumps({"model": model, "prompt": "ping", "max_tokens": 1, "temperature": 0}).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    # The URL is the engine's own loopback address from the role's settings.
    request = urllib.request.Request(url.rstrip("/") + "/v1/completions", data=body, headers=headers)  # noqa: S310
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - URL from our own config
            payload = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            # The API server refused our key before the engine was involved: this says nothing about a hang.
            return None, f"HTTP {exc.code}: the key in the instance's env file is not the one the engine runs with"
        return False, f"HTTP {exc.code} from the completion"
    # Timeouts, refused connections, bad JSON, and answers that are not HTTP (http.client.HTTPException is
    # no OSError): each one is a failed probe, never a crash of the watchdog.
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__ if not str(exc) else exc} after {time.monotonic() - started:.1f} s"
    if not isinstance(payload, dict) or not payload.get("choices"):
        return False, "a completion without choices"
    return True, f"answered in {(time.monotonic() - started) * 1000:.0f} ms"


def tokens_processed(url, timeout):
    """Prompt + generated tokens the engine has processed (its /metrics), or None when unreadable."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as response:  # noqa: S310
            text = response.read().decode("utf-8", "replace")
    except (OSError, ValueError, http.client.HTTPException):
        return None
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(("vllm:generation_tokens_total", "vllm:prompt_tokens_total")):
            try:
                total += float(line.rsplit(" ", 1)[1])
                seen = True
            except (IndexError, ValueError):
                continue
    return total if seen else None


def load(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def save(path, state):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(state, handle)
    os.replace(tmp, path)


def liveness(env):
    """One Kubernetes exec liveness probe: 0 alive (or busy, or cannot tell), 1 hung or broken."""
    state_dir = env.get("WATCHDOG_STATE_DIR", "/tmp/vllm-liveness")  # noqa: S108 - an emptyDir in the pod
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    state_file = os.path.join(state_dir, "liveness.json")
    url = env.get("WATCHDOG_URL", "http://127.0.0.1:8000")
    ok, reason = probe(
        url, env["WATCHDOG_MODEL"], env.get("VLLM_API_KEY", ""), float(env.get("WATCHDOG_TIMEOUT", "10"))
    )
    tokens, last_tokens = tokens_processed(url, 3), load(state_file).get("tokens")
    save(state_file, {"tokens": tokens})
    if ok is None:
        print(f"cannot probe: {reason}", flush=True)
        return 0
    if ok:
        return 0
    if tokens is not None and last_tokens is not None and tokens > last_tokens:
        print(
            f"probe failed ({reason}), but {tokens - last_tokens:.0f} tokens processed since the last probe: busy",
            flush=True,
        )
        return 0
    print(f"probe failed: {reason}; the engine is hung or broken", flush=True)
    return 1


def main(argv):
    if argv[1:] == ["--liveness"]:
        return liveness(os.environ)
    if len(argv) != 2:
        print("usage: vllm-watchdog NAME | vllm-watchdog --liveness", file=sys.stderr)
        return 2
    name = argv[1]
    unit = f"vllm@{name}.service"
    env = os.environ
    failures_allowed = int(env.get("WATCHDOG_FAILURES", "3"))
    grace = int(env.get("WATCHDOG_START_GRACE", "1800"))
    state_dir = env.get("WATCHDOG_STATE_DIR", "/run/vllm-watchdog")
    marker = os.path.join(env.get("WATCHDOG_MAINTENANCE_DIR", "/run/vllm/maintenance"), name)
    max_age = int(env.get("WATCHDOG_MAINTENANCE_MAX_AGE", "7200"))
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    state_file = os.path.join(state_dir, name + ".json")
    state = load(state_file)

    unit_now = unit_state(unit)
    if unit_now["active"] != "active" or unit_now["sub"] != "running":
        # Stopped on purpose, starting, stopping or restarting: none of our business.
        save(state_file, {})
        return 0
    try:
        age = time.time() - os.stat(marker).st_mtime
    except OSError:
        age = None
    if age is not None and age < max_age:
        if state.get("failures"):
            log(INFO, f"{unit}: maintenance in progress ({age:.0f} s), failure count reset")
        # The role restarts instances under the marker: an answer of the engine that ran before the restart
        # must not carry over to the new one, or it would lose its start grace once the marker is gone.
        answered = state.get("started") == unit_now["started"] and bool(state.get("answered"))
        save(state_file, {"started": unit_now["started"], "answered": answered, "failures": 0})
        return 0
    if age is not None:
        log(
            WARNING,
            f"{unit}: ignoring maintenance marker {marker} left {age:.0f} s ago (older than {max_age} s)",
        )

    if state.get("started") != unit_now["started"]:
        state = {"started": unit_now["started"], "answered": False, "failures": 0}
    ok, reason = probe(
        env["WATCHDOG_URL"],
        env["WATCHDOG_MODEL"],
        env.get("VLLM_API_KEY", ""),
        float(env.get("WATCHDOG_TIMEOUT", "10")),
    )
    # Whether the engine makes progress: a saturated engine may answer the probe late, a hung one never
    # moves its token counters.
    tokens, last_tokens = tokens_processed(env["WATCHDOG_URL"], 3), state.get("tokens")
    state["tokens"] = tokens
    if ok is None:
        log(WARNING, f"{unit}: cannot probe: {reason}")
        save(state_file, state)
        return 0
    if ok:
        if state.get("failures"):
            log(NOTICE, "{}: answers again ({}) after {} failed probe(s)".format(unit, reason, state["failures"]))
        elif not state.get("answered"):
            log(INFO, f"{unit}: first completion since start ({reason}); watching")
        save(state_file, {"started": unit_now["started"], "answered": True, "failures": 0, "tokens": tokens})
        return 0

    if tokens is not None and last_tokens is not None and tokens > last_tokens:
        log(
            INFO,
            f"{unit}: probe failed ({reason}), but the engine processed {tokens - last_tokens:.0f} tokens since the "
            "last probe: busy, not hung",
        )
        state["failures"] = 0
        save(state_file, state)
        return 0
    up_for = (monotonic_usec() - unit_now["started"]) / 1_000_000 if unit_now["started"] else 0
    if not state.get("answered") and up_for < grace:
        # Still loading the model (the port stays closed while it loads): not a hang yet.
        save(state_file, state)
        return 0
    state["failures"] = state.get("failures", 0) + 1
    if state["failures"] < failures_allowed:
        log(WARNING, "{}: probe {} of {} failed: {}".format(unit, state["failures"], failures_allowed, reason))
        save(state_file, state)
        return 0

    # A deliberate restart may have begun while we probed: only kill the process we probed.
    if unit_state(unit)["pid"] != unit_now["pid"]:
        save(state_file, {})
        return 0
    log(
        ERR,
        "{}: {} consecutive probes failed (last: {}); the engine is hung or broken: killing PID {} so systemd "
        "restarts the instance".format(unit, state["failures"], reason, unit_now["pid"]),
    )
    subprocess.run(["systemctl", "kill", "--signal=SIGKILL", unit], check=False)
    save(state_file, {})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
