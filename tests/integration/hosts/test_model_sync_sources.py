"""model_sync from the two other places real sites keep the merged model, on real systemd hosts.

Two nspawn hosts see the fixture models through a read-only bind mount at /storage/models (the ADR's NFS
share, mounted on every host): `sync-1` serves, `sync-2` is the source host. No vLLM here
(model_sync_reload=false); the copy, verification, store and links are what is checked:

  source on a share mounted on the serving host (`host`) -> re-run changes nothing, and the source
  manifest's cache went to /var/cache on the host, not into the read-only share -> pushed from
  another host (`remote`, rsync over SSH from the source host) -> check mode with a new version changes
  nothing -> a source host that cannot reach the serving host fails the copy, saying so, with nothing
  switched.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fleet_support import MODEL_DIR, booted_fleet, changed, digest, failures

FIXTURES = Path(os.environ["LLMOPS_FIXTURES"])
SERVING, SOURCE = "sync-1", "sync-2"
COMMON = {"model_sync_reload": False, "model_sync_disk_margin_mb": 16}

pytestmark = pytest.mark.hosts


@pytest.fixture(scope="module")
def fleet():
    yield from booted_fleet(
        "msrc", {"vllm_hosts": [SERVING], "model_sources": [SOURCE]}, bind_ro=[f"{FIXTURES / 'models'}:/storage/models"]
    )


def sha256s(fleet, directory: str, host: str = SERVING) -> str:
    return fleet.ssh(f"cd {directory} && find . -type f ! -name '.llmops-*' -exec sha256sum {{}} + | sort -k2", host)


def test_sync_from_a_mounted_share_and_from_a_source_host(fleet) -> None:
    # 1. `host`: the share is mounted on the serving host; rsync copies locally.
    tiny = "/storage/models/tiny"
    rc, out, report = fleet.playbook("promote.yml", model_sync_source=tiny, model_sync_source_location="host", **COMMON)
    assert rc == 0, failures(report) or out[-4000:]
    v1 = digest(FIXTURES / "models" / "tiny")
    assert fleet.current(SERVING) == f"versions/{v1[:16]}"
    assert fleet.ssh(f"cat {MODEL_DIR}/current/.llmops-verified").strip() == v1
    assert sha256s(fleet, f"{MODEL_DIR}/current/") == sha256s(fleet, f"{tiny}/")
    manifests = "/var/cache/llmops-platform/model-manifests"
    cache = fleet.ssh(f"stat -c '%a %U' {manifests} && ls {manifests}")
    assert cache.startswith("700 root") and cache.strip().endswith(".json"), cache
    rc, out, report = fleet.playbook("promote.yml", model_sync_source=tiny, model_sync_source_location="host", **COMMON)
    assert rc == 0 and changed(report) == 0, failures(report) or out[-4000:]

    # 2. `remote`: pushed from the source host, which needs a key the serving host accepts.
    fleet.ssh("install -d -m 0700 /root/.ssh && cat > /root/.ssh/id_ed25519 && chmod 600 /root/.ssh/id_ed25519",
              SOURCE, stdin=(fleet.state / "id_ed25519").read_text())  # fmt: skip
    remote = {"model_sync_source_location": "remote", "model_sync_source_host": SOURCE, **COMMON}
    rc, out, report = fleet.playbook("promote.yml", model_sync_source="/storage/models/tiny-v2", **remote)
    assert rc == 0, failures(report) or out[-4000:]
    v2 = digest(FIXTURES / "models" / "tiny-v2")
    assert fleet.current(SERVING) == f"versions/{v2[:16]}"
    assert fleet.current(SERVING, "previous") == f"versions/{v1[:16]}"
    assert sha256s(fleet, f"{MODEL_DIR}/current/") == sha256s(fleet, "/storage/models/tiny-v2/", SOURCE)
    assert fleet.ssh("ls /var/cache/llmops-platform/model-manifests", SOURCE).strip().endswith(".json")
    rc, out, report = fleet.playbook("promote.yml", model_sync_source="/storage/models/tiny-v2", **remote)
    assert rc == 0 and changed(report) == 0, failures(report) or out[-4000:]

    # 3. Check mode with a new version: reported as a change, nothing copied or switched.
    rc, out, report = fleet.playbook("promote.yml", "--check", model_sync_source="/storage/models/tiny", **remote)
    assert rc == 0 and changed(report) > 0, failures(report) or out[-4000:]
    assert fleet.current(SERVING) == f"versions/{v2[:16]}"
    assert ".staging-" not in fleet.ssh(f"ls -a {MODEL_DIR}")

    # 4. The source host can no longer reach the serving host: the copy fails, saying why; nothing switches.
    fleet.ssh("rm /root/.ssh/id_ed25519", SOURCE)
    rc, out, report = fleet.playbook("promote.yml", model_sync_source="/storage/models/tiny-broken", **remote)
    assert rc != 0
    assert "Copy from the source host into staging" in failures(report), failures(report) or out[-4000:]
    assert "Permission denied" in failures(report), failures(report)
    assert fleet.current(SERVING) == f"versions/{v2[:16]}"
