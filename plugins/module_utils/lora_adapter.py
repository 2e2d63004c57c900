# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Load and unload LoRA adapters on a running vLLM server, idempotently (module vllm_lora_adapter).

vLLM lists every adapter it serves in ``/v1/models`` with ``parent`` (the base model's served name) and
``root`` (the adapter's path). ``POST /v1/load_lora_adapter`` ({lora_name, lora_path}) and
``POST /v1/unload_lora_adapter`` ({lora_name}) change that list without a restart, but only on a server
started with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``; otherwise the routes do not
exist (HTTP 404 ``{"detail": "Not Found"}``) or the engine refuses (HTTP 500).

``plan`` decides from the listing what to do; ``apply`` does it, then reads the listing again to prove it.
Only the standard library and ansible.module_utils (through openai_client), Python 3.8+.
"""

import json
import re
from typing import Any, Dict, List, Optional

from ansible_collections.llmops.platform.plugins.module_utils.openai_client import (
    OpenAIEndpoint,
    ReadinessError,
    lora_adapters,
)

# The server configuration model's rule (vllm_server.LORA_NAME_RE): a model name in requests.
ADAPTER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
RUNTIME_FIX = (
    "start the server with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (set "
    "vllm_host_lora_runtime_updating / vllm_k8s_lora_runtime_updating to true; server configuration key "
    "lora_runtime_updating)"
)


class LoraAdapterError(Exception):
    """A failure with what to do; ``details`` go to fail_json."""

    def __init__(self, msg: str, **details: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details


def check_params(name: str, path: Optional[str], state: str) -> None:
    if not ADAPTER_NAME_RE.match(name or ""):
        raise LoraAdapterError(
            "name: adapter names are letters, digits and ._- (at most 64, starting with a letter or digit), "
            f"got {name!r}"
        )
    if state == "present":
        if not path:
            raise LoraAdapterError("path: required with state=present (the adapter's directory on the server)")
        if ".." in path.split("/"):
            raise LoraAdapterError(f"path: must not contain a '..' component, got {path!r}")


def listed(endpoint: OpenAIEndpoint) -> Dict[str, Any]:
    """{served: [ids], adapters: [{name, parent, path}]} from /v1/models."""
    try:
        entries, _result = endpoint.list_model_entries()
    except ReadinessError as exc:
        details = exc.as_result()
        details.pop("msg", None)
        raise LoraAdapterError(f"reading the served models (/v1/models) failed: {exc.msg}", **details) from None
    return {"served": [str(e["id"]) for e in entries], "adapters": lora_adapters(entries)}


def plan(current: Dict[str, Any], name: str, path: Optional[str], state: str) -> List[str]:
    """The requests to send: [] (nothing to do), ["load"], ["unload"] or ["unload", "load"] (another path)."""
    adapter = next((a for a in current["adapters"] if a["name"] == name), None)
    if adapter is None and name in current["served"]:
        raise LoraAdapterError(
            f"{name!r} is a served model of this server, not a LoRA adapter (it has no parent in /v1/models); "
            "give the adapter a name of its own",
            served_models=current["served"],
        )
    if state == "absent":
        return ["unload"] if adapter else []
    if adapter is None:
        return ["load"]
    # vLLM lists the path it loaded as `root`; a server that does not say is taken at its word.
    if adapter.get("path") not in (None, path):
        return ["unload", "load"]
    return []


def _send(endpoint: OpenAIEndpoint, action: str, name: str, path: Optional[str]) -> str:
    payload = {"lora_name": name}
    if action == "load":
        payload["lora_path"] = path
    route = f"/v1/{action}_lora_adapter"
    result = endpoint.request("POST", endpoint.api_url(route), payload=payload)
    if result.ok:
        return result.body.strip()
    body = endpoint.snippet(result.body)
    if result.status is None:
        raise LoraAdapterError(f"POST {route} failed: {result.error}")
    if result.status in (401, 403):
        raise LoraAdapterError(
            f"POST {route} answered HTTP {result.status}: the API key is missing or was rejected; set api_key to the "
            "server's VLLM_API_KEY",
            status=result.status,
            body=body,
        )
    if result.status == 404 and _route_missing(result.body):
        raise LoraAdapterError(
            f"POST {route} answered HTTP 404: the server does not allow loading adapters at runtime; {RUNTIME_FIX}",
            status=404,
            body=body,
        )
    if result.status in (405, 500):
        raise LoraAdapterError(
            f"POST {route} answered HTTP {result.status} ({body or 'empty body'}): a server started without runtime "
            f"adapter updating answers so; {RUNTIME_FIX}",
            status=result.status,
            body=body,
        )
    raise LoraAdapterError(
        "POST {} for {!r} answered HTTP {}: {}{}".format(
            route,
            name,
            result.status,
            body or "(empty body)",
            " (is the path an adapter directory the server can read: adapter_config.json and weights, a rank "
            "within its --max-lora-rank?)"
            if action == "load"
            else "",
        ),
        status=result.status,
        body=body,
    )


def _route_missing(body: str) -> bool:
    """FastAPI's answer for a route that does not exist (vLLM registers these routes only when allowed)."""
    try:
        data = json.loads(body)
    except ValueError:
        return True
    return isinstance(data, dict) and data.get("detail") == "Not Found"


def apply(
    endpoint: OpenAIEndpoint, name: str, path: Optional[str], state: str, check_mode: bool = False
) -> Dict[str, Any]:
    """Make the adapter present or absent. Returns changed, actions, before/after adapter lists, responses."""
    check_params(name, path, state)
    before = listed(endpoint)
    actions = plan(before, name, path, state)
    result = {
        "changed": bool(actions),
        "actions": actions,
        "name": name,
        "state": state,
        "before": before["adapters"],
        "responses": [],
    }  # type: Dict[str, Any]
    if not actions or check_mode:
        result["adapters"] = before["adapters"]
        result["served_models"] = before["served"]
        return result
    for action in actions:
        result["responses"].append(_send(endpoint, action, name, path))
    after = listed(endpoint)
    result["adapters"] = after["adapters"]
    result["served_models"] = after["served"]
    names = [a["name"] for a in after["adapters"]]
    if (state == "present") != (name in names):
        raise LoraAdapterError(
            "the server answered {} but /v1/models {} {!r} afterwards (adapters: {})".format(
                " and ".join(result["responses"]) or "OK",
                "does not list" if state == "present" else "still lists",
                name,
                names,
            ),
            **result,
        )
    return result
