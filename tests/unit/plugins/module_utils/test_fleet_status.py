"""The fleet status report (plugins/module_utils/fleet_status.py) and its filters: states, rows, renderings.

The inputs have the shapes the roles' status entry points register: host_state_info's units, openai_health's
results (success, and a failure with its kind), model_store's versions, k8s_info's Deployment and pods.
"""

from __future__ import annotations

import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.filter.fleet_status import FilterModule
from ansible_collections.llmops.platform.plugins.module_utils import fleet_status as fs

DIGEST = "3f1c9a0be2d47c55" + "a" * 48
OLD_DIGEST = "77aa01bb23cc45dd" + "b" * 48
KEY = "fleet-status-key-0123456789"


def unit(active: str, sub: str = "running", restarts: int = 0, load: str = "loaded") -> dict:
    return {"load": load, "active": active, "sub": sub, "enabled": "enabled", "main_pid": 42, "n_restarts": restarts}


def healthy(name: str) -> dict:
    return {
        "item": name,
        "ready": True,
        "server_version": "0.32.0",
        "model": "tiny",
        "served_models": ["tiny"],
        "latencies": {"completion": 41.7},
        "changed": False,
        "failed": False,
    }


def timed_out(name: str) -> dict:
    return {
        "item": name,
        "ready": False,
        "failed": False,
        "kind": "timeout",
        "served_models": [],
        "msg": "https://h:8000/health did not answer within request_timeout (5 s) for 5 s",
    }


def external(host: str = "gpu-1", **status) -> dict:
    names = status.pop("names", ["main", "second", "third", "fourth"])
    return {
        "layout": "external",
        "host": host,
        "reachable": True,
        "error": "",
        "vllm_host": {
            "names": names,
            "served_models": ["tiny"] * len(names),
            "units": status.pop("units", {}),
            "maintenance": status.pop("maintenance", []),
            "installed_version": "0.32.0",
            "health": status.pop("health", []),
        },
        "model_sync": {
            "current": DIGEST[:16],
            "previous": OLD_DIGEST[:16],
            "digest": DIGEST,
            "previous_digest": OLD_DIGEST,
            "promoted_at": 1795739513.2,
            "lock": None,
        },
    }


def test_external_states_come_from_the_unit_first_then_a_real_completion() -> None:
    entry = external(
        units={
            "vllm@main.service": unit("active", restarts=2),
            "vllm@second.service": unit("active"),
            "vllm@third.service": unit("inactive", "dead"),
            "vllm@fourth.service": unit("failed", "failed", restarts=5),
        },
        health=[healthy("main"), timed_out("second")],
        maintenance=["second"],
    )
    rows = {row["instance"]: row for row in fs.fleet_rows([entry])}
    assert {name: row["state"] for name, row in rows.items()} == {
        "main": "healthy",
        "second": "hung",
        "third": "stopped",
        "fourth": "failed",
    }
    main = rows["main"]
    assert main["vllm_version"] == "0.32.0" and main["vllm_version_source"] == "server"
    assert (main["served_model"], main["digest"], main["current"], main["previous"]) == (
        "tiny",
        DIGEST,
        DIGEST[:16],
        OLD_DIGEST[:16],
    )
    assert main["restarts"] == 2 and main["promoted_at"] == "2026-11-27T00:31:53Z"
    assert "in maintenance" in rows["second"]["detail"] and "does not answer" in rows["second"]["detail"]
    # Not answering: the release is the one installed in the virtualenv.
    assert rows["third"]["vllm_version"] == "0.32.0" and rows["third"]["vllm_version_source"] == "installed"
    assert rows["fourth"]["restarts"] == 5


@pytest.mark.parametrize(
    ("unit_state", "health", "state"),
    [
        (
            unit("active"),
            {"item": "main", "ready": False, "kind": "health_http", "msg": "kept answering HTTP 503"},
            "unhealthy",
        ),
        (unit("active"), {"item": "main", "ready": False, "kind": "refused", "msg": "not reachable"}, "unhealthy"),
        (unit("activating", "start"), None, "starting"),
        (unit("inactive", "dead", load="not-found"), None, "absent"),
        (unit("active"), None, "unknown"),
    ],
)
def test_other_external_states(unit_state: dict, health: dict, state: str) -> None:
    entry = external(names=["main"], units={"vllm@main.service": unit_state}, health=[health] if health else [])
    assert [row["state"] for row in fs.fleet_rows([entry])] == [state]


def test_a_host_without_status_is_one_row_saying_why() -> None:
    rows = fs.fleet_rows(
        [
            {
                "layout": "external",
                "host": "gpu-2",
                "reachable": False,
                "error": "ssh: connect to host: No route",
                "vllm_host": {},
                "model_sync": {},
            },
            {
                "layout": "external",
                "host": "gpu-3",
                "reachable": True,
                "error": "Read the model store: permission denied",
                "vllm_host": {},
                "model_sync": {},
            },
        ]
    )
    assert [(row["host"], row["state"]) for row in rows] == [("gpu-2", "unreachable"), ("gpu-3", "error")]
    assert "No route" in rows[0]["detail"] and "permission denied" in rows[1]["detail"]


def test_entries_that_are_not_entries_are_refused() -> None:
    with pytest.raises(fs.FleetStatusError, match="with a host"):
        fs.fleet_rows([{"layout": "external"}])
    with pytest.raises(AnsibleFilterError, match="list of status entries"):
        FilterModule().filters()["fleet_status_report"]("not a list")


def pod(
    name: str,
    *,
    ready: bool = True,
    phase: str = "Running",
    restarts: int = 0,
    revision: str = "merged-2",
    app: str = "vllm",
    waiting: str = "",
) -> dict:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": app, "app.kubernetes.io/instance": "vllm"},
            "annotations": {"llmops.io/model-revision": revision},
        },
        "spec": {"containers": [{"image": "vllm/vllm-openai:v0.32.0", "ports": [{"containerPort": 8000}]}]},
        "status": {"phase": phase, "containerStatuses": [{"ready": ready, "restartCount": restarts, "state": state}]},
    }


def internal(pods: list, health: list) -> dict:
    selector = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "vllm"}
    return {
        "layout": "internal",
        "host": "llm-inference/vllm",
        "error": "",
        "vllm_k8s": {
            "name": "llm-inference/vllm",
            "deployment": {
                "metadata": {"annotations": {"deployment.kubernetes.io/revision": "3"}},
                "spec": {"selector": {"matchLabels": selector}},
                "status": {"conditions": [{"type": "Progressing", "lastUpdateTime": "2026-12-01T10:00:00Z"}]},
            },
            "record": {
                "revision": "merged-2",
                "digest": DIGEST,
                "model_path": "/data/models/merged-2",
                "previous": json.dumps({"revision": "merged-1", "digest": OLD_DIGEST}),
            },
            "revision_annotation": "llmops.io/model-revision",
            "pods": pods,
            "health": health,
        },
    }


def test_internal_rows_per_pod_of_the_deployment() -> None:
    pods = [
        pod("vllm-a"),
        pod("vllm-b", revision="merged-1", restarts=1),
        pod("vllm-c", ready=False, restarts=4, waiting="CrashLoopBackOff"),
        pod("vllm-d", phase="Pending", ready=False),
        pod("other", app="mlflow"),  # not selected by the Deployment: never a row
    ]
    health = [
        dict(healthy("x"), item={"name": "vllm-status-0", "pod": "vllm-a", "port": 8000, "local_port": 18100}),
        dict(timed_out("x"), item={"name": "vllm-status-1", "pod": "vllm-b", "port": 8000, "local_port": 18101}),
    ]
    rows = fs.fleet_rows([internal(pods, health)])
    assert [(row["instance"], row["state"]) for row in rows] == [
        ("vllm-a", "healthy"),
        ("vllm-b", "hung"),
        ("vllm-c", "failed"),
        ("vllm-d", "starting"),
    ]
    a, b = rows[0], rows[1]
    assert (a["digest"], a["current"], a["previous"], a["vllm_version"]) == (DIGEST, "merged-2", "merged-1", "0.32.0")
    assert a["promotion"] == "Deployment revision 3" and a["promoted_at"] == "2026-12-01T10:00:00Z"
    # A pod of the older ReplicaSet serves the previous revision, with its digest.
    assert (b["current"], b["digest"], b["restarts"]) == ("merged-1", OLD_DIGEST, 1)
    assert rows[2]["restarts"] == 4 and "CrashLoopBackOff" in rows[2]["detail"]
    # Without an answer the version is the image's tag.
    assert rows[2]["vllm_version"] == "v0.32.0"


def test_no_deployment_or_no_pod() -> None:
    missing = internal([], [])
    missing["vllm_k8s"]["deployment"] = None
    rows = fs.fleet_rows([missing, internal([], [])])
    assert [row["state"] for row in rows] == ["error", "stopped"]
    assert "no Deployment" in rows[0]["detail"] and rows[1]["detail"] == "no vLLM pod"


def test_pods_to_probe_one_forward_per_running_selected_pod() -> None:
    pods = [pod("vllm-a"), pod("vllm-d", phase="Pending"), pod("other", app="mlflow"), pod("vllm-b", ready=False)]
    selector = {"app.kubernetes.io/name": "vllm"}
    forwards = FilterModule().filters()["fleet_status_pods"](pods, selector, 18100, 8000)
    assert forwards == [
        {"name": "vllm-status-0", "pod": "vllm-a", "port": 8000, "local_port": 18100},
        {"name": "vllm-status-1", "pod": "vllm-b", "port": 8000, "local_port": 18101},
    ]


def test_report_renders_table_markdown_and_json_without_the_key() -> None:
    leaky = timed_out("second")
    leaky["msg"] += f" (Bearer {KEY})"  # a message should never carry it; the filter still hides it
    entry = external(
        names=["main", "second"],
        units={"vllm@main.service": unit("active"), "vllm@second.service": unit("active")},
        health=[healthy("main"), leaky],
    )
    report = FilterModule().filters()["fleet_status_report"]([entry], 1795739513, [KEY])
    assert report["summary"] == {"healthy": 1, "hung": 1}
    assert [row["instance"] for row in report["bad"]] == ["second"]
    table = report["table"]
    assert table[0].split()[:4] == ["LAYOUT", "HOST", "INSTANCE", "STATE"]
    assert len({len(line) for line in table[:1]}) == 1 and DIGEST[:16] in table[1] and DIGEST not in table[1]
    assert table[-1] == "1 healthy, 1 hung"
    document = json.loads(report["json"])
    assert document["generated_at"] == "2026-11-27T00:31:53Z" and document["rows"][0]["digest"] == DIGEST
    assert "| external | gpu-1 | main | healthy | 0.32.0 | tiny | " + DIGEST in report["markdown"]
    for text in (report["json"], report["markdown"], "\n".join(table)):
        assert KEY not in text
    assert fs.REDACTED in report["json"]


def test_times() -> None:
    assert fs.format_time(0) == "1970-01-01T00:00:00Z"
    assert fs.format_time("1795739513.9") == "2026-11-27T00:31:53Z"
    assert fs.format_time("2026-12-01T10:00:00Z") == "2026-12-01T10:00:00Z"
    assert fs.format_time(None) == ""
