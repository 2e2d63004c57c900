"""plan_host: the vllm_host role's one-pass variable check and the plan of its instances.

The settings start from the role's own defaults (roles/vllm_host/defaults/main.yml, mapped through
``_vllm_host_settings`` of roles/vllm_host/vars/main.yml), so the tests follow the role when a default
changes. The end-to-end behaviour (the role fails in preflight, naming the variable) is in
tests/integration/roles/test_vllm_host_preflight.py.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
from plan_support import role_settings

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.llmops.platform.plugins.module_utils import vllm_host_plan as vp  # noqa: E402
from ansible_collections.llmops.platform.plugins.module_utils.vllm_host_plan import (  # noqa: E402
    HostPlanError,
    plan_host,
)

KEY = "k3y-0123456789abcdef"


DEFAULTS = role_settings("vllm_host")


def settings(**overrides: Any) -> Dict[str, Any]:
    """A valid cpu host with the proxy, TLS from a local CA and the watchdog (the role's defaults otherwise)."""
    base = copy.deepcopy(DEFAULTS)
    base.update(
        profile="cpu",
        api_key=KEY,
        model_path="/srv/models/tiny",
        served_model_name="tiny",
        tls_local_ca_dir="/srv/pki/ca",
    )
    base.update(overrides)
    return base


def instances(*entries: Dict[str, Any]) -> Dict[str, Any]:
    return {"instances": list(entries)}


def fails(variable: str, reason: str = "", **overrides: Any) -> str:
    """The message of the HostPlanError the settings raise; it starts with the variable."""
    with pytest.raises(HostPlanError) as info:
        plan_host(settings(**overrides))
    message = str(info.value)
    assert message.startswith(variable + ":"), message
    assert reason in message, message
    return message


# --- the plan of valid configurations ------------------------------------------------------------------


def test_defaults_cover_every_setting_the_plan_reads():
    plan = plan_host(settings())
    assert [srv["name"] for srv in plan["servers"]] == ["main"]


def test_proxy_and_tls_plan():
    plan = plan_host(settings())
    assert plan["proxy"] is True and plan["tls"] is True and plan["watchdog"] is True
    assert plan["routes"] == ["/v1/", "/version"] and plan["metrics_allow"] == ["127.0.0.1/32"]
    assert plan["python"] == "/usr/bin/python3"
    (srv,) = plan["servers"]
    assert srv["port"] == 8000  # clients: HAProxy
    assert srv["engine_host"] == "127.0.0.1" and srv["engine_port"] == 18000
    assert srv["probe_url"] == "http://127.0.0.1:18000"  # the watchdog talks to the engine itself
    assert srv["gate_url"] == "https://127.0.0.1:8000"  # the health gate goes through the proxy
    assert srv["config"]["host"] == "127.0.0.1" and srv["config"]["port"] == 18000
    args = srv["args"]
    assert args[args.index("--host") + 1] == "127.0.0.1" and args[args.index("--port") + 1] == "18000"
    assert args[args.index("--model") + 1] == "/srv/models/tiny"
    assert srv["devices"] == []


def test_proxy_without_tls_gates_over_http():
    (srv,) = plan_host(settings(tls=False))["servers"]
    assert srv["gate_url"] == "http://127.0.0.1:8000" and srv["engine_port"] == 18000


def test_engine_port_offset_moves_only_the_engine():
    plan = plan_host(
        settings(engine_port_offset=1, **instances({"name": "a", "port": 8000}, {"name": "b", "port": 9000}))
    )
    assert [(s["port"], s["engine_port"]) for s in plan["servers"]] == [(8000, 8001), (9000, 9001)]


def test_without_proxy_the_engine_listens_itself_and_tls_is_off():
    plan = plan_host(settings(proxy=False, tls=False, **instances({"name": "main", "port": 8080})))
    assert plan["proxy"] is False and plan["tls"] is False  # TLS lives in the proxy
    (srv,) = plan["servers"]
    assert srv["engine_host"] == "0.0.0.0" and srv["engine_port"] == 8080 and srv["port"] == 8080
    assert srv["probe_url"] == "http://127.0.0.1:8080"  # the wildcard is probed on loopback
    assert srv["gate_url"] == "http://127.0.0.1:8080"


def test_tls_without_the_proxy_is_refused():
    """TLS is terminated by the proxy: without it, the engine would quietly serve plain HTTP."""
    assert "plain HTTP" in fails("vllm_host_tls", proxy=False, **instances({"name": "main", "port": 8080}))


@pytest.mark.parametrize("unit", ["notify now.service", "x;rm.service", "page-oncall", "", 5])
def test_on_failure_units_must_be_unit_names(unit):
    fails("vllm_host_on_failure_units[0]", on_failure_units=[unit])


def test_on_failure_units_take_instance_specifiers():
    plan_host(settings(on_failure_units=["notify-oncall@%i.service"]))


def test_without_proxy_ipv6_hosts_are_bracketed():
    plan = plan_host(
        settings(proxy=False, tls=False, health_host="::1", **instances({"name": "main", "port": 8080, "host": "::1"}))
    )
    (srv,) = plan["servers"]
    assert srv["probe_url"] == "http://[::1]:8080" and srv["gate_url"] == "http://[::1]:8080"


def test_health_host_on_a_specific_proxy_bind():
    (srv,) = plan_host(settings(proxy_bind="10.0.0.5", health_host="10.0.0.5"))["servers"]
    assert srv["gate_url"] == "https://10.0.0.5:8000"


def test_cuda_instances_with_their_own_gpus():
    plan = plan_host(
        settings(
            profile="cuda",
            **instances(
                {"name": "a", "port": 8000, "devices": [0, 1], "tensor_parallel_size": 2},
                {"name": "b", "port": 8001, "devices": ["2"]},
            ),
        )
    )
    assert [s["devices"] for s in plan["servers"]] == [[0, 1], [2]]
    assert plan["servers"][0]["config"]["tensor_parallel_size"] == 2


def test_values_from_extra_vars_arrive_as_strings():
    plan = plan_host(
        settings(proxy="yes", tls="false", watchdog_interval="10", engine_port_offset="1000", stop_timeout="120")
    )
    assert plan["proxy"] is True and plan["tls"] is False
    assert plan["servers"][0]["engine_port"] == 9000


def test_the_plan_holds_no_secret():
    plan = plan_host(
        settings(
            hf_token="hf_t0ken-abcdef",
            environment={"SHARED": "env-s3cret"},
            **instances({"name": "main", "port": 8000, "environment": {"OWN": "own-s3cret"}}),
        )
    )
    text = json.dumps(plan)
    for secret in (KEY, "hf_t0ken-abcdef", "env-s3cret", "own-s3cret"):
        assert secret not in text


def test_the_settings_are_not_changed():
    given = settings(watchdog_interval="10")
    before = copy.deepcopy(given)
    plan_host(given)
    assert given == before


def test_hugging_face_id_with_open_egress_and_lora_ids():
    plan = plan_host(
        settings(
            model_path="Qwen/Qwen2.5-0.5B",
            engine_ip_allow=["any"],
            **instances({"name": "main", "port": 8000, "enable_lora": True, "lora_modules": {"sql": "org/sql-lora"}}),
        )
    )
    assert plan["servers"][0]["config"]["model"] == "Qwen/Qwen2.5-0.5B"


def test_open_endpoint_without_a_key():
    plan_host(settings(api_key="", api_key_required=False))


def test_read_only_parent_of_the_state_directory_is_fine():
    # ReadWritePaths= of the state directory is more specific, so it stays writable.
    plan_host(settings(extra_read_only_paths=["/var/lib"], extra_read_write_paths=["/srv/vllm/scratch"]))


def test_dual_stack_bind_serves_an_ipv6_health_host():
    plan_host(settings(proxy_bind="::", health_host="::1"))


@pytest.mark.parametrize(
    ("bind", "health"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "localhost"),
        ("::1", "localhost"),
        ("::1", "::1"),
        ("0.0.0.0", "localhost"),
    ],
)
def test_health_hosts_that_reach_the_proxy(bind, health):
    (srv,) = plan_host(settings(proxy_bind=bind, health_host=health))["servers"]
    assert srv["gate_url"].startswith("https://")


def test_caches_where_the_server_may_write():
    plan_host(
        settings(
            extra_read_write_paths=["/srv/hf"],
            environment={"HF_HOME": "/srv/hf/home", "XDG_CACHE_HOME": "/tmp/xdg", "HF_HUB_OFFLINE": "1"},
            **instances({"name": "a", "port": 8000, "environment": {"VLLM_CACHE_ROOT": "/var/lib/vllm/cache/a2"}}),
        )
    )


# --- failures: the first problem, named -----------------------------------------------------------------

FAILURES = {
    "profile": ("profile", {"profile": "gpu"}),
    "version latest": ("version", {"version": "latest"}),
    "version range": ("version", {"version": ">=0.32"}),
    "version wildcard": ("version", {"version": "0.32.*"}),
    "package with a pin": ("package", {"package": "vllm==0.31"}),
    "root user": ("user", {"user": "root"}),
    "daemon group": ("group", {"group": "daemon"}),
    "user with a space": ("user", {"user": "a b"}),
    "install dir /": ("install_dir", {"install_dir": "/"}),
    "config dir /etc": ("config_dir", {"config_dir": "/etc"}),
    "state dir /var/lib": ("state_dir", {"state_dir": "/var/lib"}),
    "relative state dir": ("state_dir", {"state_dir": "var/lib/vllm"}),
    "state dir with ..": ("state_dir", {"state_dir": "/var/lib/vllm/../x"}),
    "state dir trailing slash": ("state_dir", {"state_dir": "/var/lib/vllm/"}),
    "config dir with a space": ("config_dir", {"config_dir": "/etc/v llm"}),
    "config dir with a dollar": ("config_dir", {"config_dir": "/etc/$vllm"}),
    "nested dirs": ("state_dir", {"state_dir": "/opt/vllm/state"}),
    "install dir under /home": ("install_dir", {"install_dir": "/home/u/vllm"}),
    "state dir under /var/tmp": ("state_dir", {"state_dir": "/var/tmp/vllm"}),
    "python under /home": ("python", {"python": "/home/u/.venv/bin/python"}),
    "rw path /": ("extra_read_write_paths[0]", {"extra_read_write_paths": ["/"]}),
    "rw path over the config dir": ("extra_read_write_paths[0]", {"extra_read_write_paths": ["/etc/vllm"]}),
    "rw path under /run/user": ("extra_read_write_paths[0]", {"extra_read_write_paths": ["/run/user/1000/x"]}),
    "rw paths as a string": ("extra_read_write_paths", {"extra_read_write_paths": "/srv/x"}),
    "ro path is the state dir": ("extra_read_only_paths[0]", {"extra_read_only_paths": ["/var/lib/vllm"]}),
    "ro path under /home": ("extra_read_only_paths[0]", {"extra_read_only_paths": ["/home/shared"]}),
    "proxy not a bool": ("proxy", {"proxy": "sometimes"}),
    "tls not a bool": ("tls", {"tls": "maybe"}),
    "empty key": ("api_key", {"api_key": ""}),
    "short key": ("api_key", {"api_key": "short"}),
    "key with a space": ("api_key", {"api_key": "0123456789 abcdef"}),
    "key with a newline": ("api_key", {"api_key": "0123456789abcdef\n"}),
    "token with a newline": ("hf_token", {"hf_token": "hf_x\ny"}),
    # Python's `$` also matches before a final newline: these once passed.
    "key with a trailing newline": ("api_key", {"api_key": "0123456789abcdef-key\n"}),
    "instance name with a trailing newline": ("instances[0].name", {"instances": [{"name": "main\n"}]}),
    "environment name with a trailing newline": ("environment.X\n", {"environment": {"X\n": "1"}}),
    "index without scheme": ("pip_index_url", {"pip_index_url": "mirror/simple"}),
    "find-links credentials": ("pip_find_links[0]", {"pip_find_links": ["https://u:p@m/w"]}),
    "extra args token": ("pip_extra_args[0]", {"pip_extra_args": ["https://tok@m/simple"]}),
    "extra args -i": ("pip_extra_args[1]", {"pip_extra_args": ["-q", "-i", "https://m/simple"]}),
    "extra args --index-url=": ("pip_extra_args[0]", {"pip_extra_args": ["--index-url=https://m/simple"]}),
    "extra args --extra-index-url": ("pip_extra_args[0]", {"pip_extra_args": ["--extra-index-url", "https://m"]}),
    "extra args --index abbreviation": ("pip_extra_args[0]", {"pip_extra_args": ["--index", "https://m"]}),
    "egress to a name": ("engine_ip_allow[0]", {"engine_ip_allow": ["internet"]}),
    "metrics from a name": ("metrics_allow[0]", {"metrics_allow": ["prom"]}),
    "route without slash": ("proxy_routes[0]", {"proxy_routes": ["v1"]}),
    "route with ..": ("proxy_routes[0]", {"proxy_routes": ["/v1/.."]}),
    "no routes": ("proxy_routes", {"proxy_routes": []}),
    "bind a name": ("proxy_bind", {"proxy_bind": "eth0"}),
    "offset 0": ("engine_port_offset", {"engine_port_offset": 0}),
    "offset beyond": ("engine_port_offset", {"engine_port_offset": 70000}),
    "tls nothing": ("tls_cert_src", {"tls_local_ca_dir": ""}),
    "tls cert only": ("tls_key_src", {"tls_cert_src": "/etc/hosts"}),
    "tls missing cert file": ("tls_cert_src", {"tls_cert_src": "/nonexistent.pem", "tls_key_src": "/etc/hosts"}),
    "tls local CA relative": ("tls_local_ca_dir", {"tls_local_ca_dir": "ca"}),
    "stop timeout 0": ("stop_timeout", {"stop_timeout": 0}),
    "restart -1": ("restart_sec", {"restart_sec": -1}),
    "health timeout words": ("health_timeout", {"health_timeout": "soon"}),
    "watchdog interval 0": ("watchdog_interval", {"watchdog_interval": 0}),
    "watchdog interval bool": ("watchdog_interval", {"watchdog_interval": True}),
    "watchdog interval float": ("watchdog_interval", {"watchdog_interval": 2.5}),
    "watchdog failures 0": ("watchdog_failures", {"watchdog_failures": 0}),
    "watchdog timeout absurd": ("watchdog_timeout", {"watchdog_timeout": 61}),
    "watchdog not a bool": ("watchdog", {"watchdog": "enabled"}),
    "served name newline": ("served_model_name", {"served_model_name": "a\nb"}),
    "served name quote": ("served_model_name", {"served_model_name": "a'b"}),
    "server defaults a list": ("server_defaults", {"server_defaults": ["dtype=half"]}),
    "host in server defaults": ("server_defaults.host", {"server_defaults": {"host": "0.0.0.0"}}),
    "environment name": ("environment.A-B", {"environment": {"A-B": "1"}}),
    "environment reserved": ("environment.VLLM_API_KEY", {"environment": {"VLLM_API_KEY": "x"}}),
    "environment value bool": ("environment.X", {"environment": {"X": True}}),
    "environment not a mapping": ("environment", {"environment": ["X=1"]}),
    "no instances": ("instances", {"instances": []}),
    "instances a mapping": ("instances", {"instances": {"name": "main"}}),
    "instance a string": ("instances[0]", {"instances": ["main"]}),
    "instance name int": ("instances[0].name", {"instances": [{"name": 1}]}),
    "instance name dot": ("instances[0].name", {"instances": [{"name": "a.b"}]}),
    "instance name twice": ("instances[1].name", {"instances": [{"name": "a", "port": 1}, {"name": "a", "port": 2}]}),
    "devices on cpu": ("instances[0].devices", {"instances": [{"name": "a", "devices": [0]}]}),
    "devices scalar": ("instances[0].devices", {"profile": "cuda", "instances": [{"name": "a", "devices": 0}]}),
    "devices string": ("instances[0].devices", {"profile": "cuda", "instances": [{"name": "a", "devices": "0,1"}]}),
    "device bool": ("instances[0].devices[0]", {"profile": "cuda", "instances": [{"name": "a", "devices": [True]}]}),
    "device twice": ("instances[0].devices", {"profile": "cuda", "instances": [{"name": "a", "devices": [1, "1"]}]}),
    "devices vs tp": (
        "instances[0].devices",
        {"profile": "cuda", "instances": [{"name": "a", "devices": [0], "tensor_parallel_size": 2}]},
    ),
    "gpu in two instances": (
        "instances[1].devices",
        {"profile": "cuda", "instances": [{"name": "a", "devices": [0]}, {"name": "b", "port": 8001, "devices": [0]}]},
    ),
    "instance without devices beside another": (
        "instances[0].devices",
        {"profile": "cuda", "instances": [{"name": "a"}, {"name": "b", "port": 8001, "devices": [1]}]},
    ),
    "instance env reserved": (
        "instances[0].environment.CUDA_VISIBLE_DEVICES",
        {"instances": [{"name": "a", "environment": {"CUDA_VISIBLE_DEVICES": "1"}}]},
    ),
    "instance host behind proxy": ("instances[0].host", {"instances": [{"name": "a", "host": "0.0.0.0"}]}),
    "instance served name backslash": (
        "instances[0].served_model_name[0]",
        {"instances": [{"name": "a", "served_model_name": "a\\b"}]},
    ),
    "unknown server key": ("instances[0].max_model_length", {"instances": [{"name": "a", "max_model_length": 1}]}),
    "model under /root": ("instances[0].model", {"model_path": "/root/m"}),
    "model under /proc": ("instances[0].model", {"model_path": "/proc/1/root/m"}),
    "model through ..": ("instances[0].model", {"model_path": "/srv/../tmp/m"}),
    "model in config dir": ("instances[0].model", {"model_path": "/etc/vllm/m"}),
    "model relative": ("instances[0].model", {"model_path": "models/../m", "engine_ip_allow": ["any"]}),
    "model dot relative": ("instances[0].model", {"model_path": "./m", "engine_ip_allow": ["any"]}),
    "model three parts": ("instances[0].model", {"model_path": "a/b/c", "engine_ip_allow": ["any"]}),
    "model hub id without egress": ("instances[0].model", {"model_path": "org/name"}),
    "model with a tab": ("instances[0].model", {"model_path": "/srv/m\tx"}),
    "lora under /tmp": (
        "instances[0].lora_modules.x",
        {"instances": [{"name": "a", "enable_lora": True, "lora_modules": {"x": "/tmp/x"}}]},
    ),
    "drain beyond stop": ("stop_timeout", {"stop_timeout": 30, "instances": [{"name": "a", "shutdown_timeout": 30}]}),
    "privileged port without proxy": (
        "instances[0].port",
        {"proxy": False, "tls": False, "instances": [{"name": "a", "port": 80}]},
    ),
    "privileged engine port": (
        "instances[0].port",
        {"engine_port_offset": 1, "instances": [{"name": "a", "port": 80}]},
    ),
    "engine port overflow": ("instances[0].port", {"instances": [{"name": "a", "port": 65000}]}),
    "same port": ("instances[0].port", {"instances": [{"name": "a", "port": 8000}, {"name": "b", "port": "8000"}]}),
    "engine port on a public port": (
        "instances[0].port",
        {"engine_port_offset": 1, "instances": [{"name": "a", "port": 8000}, {"name": "b", "port": 8001}]},
    ),
    "engine host not an address": (
        "instances[0].host",
        {"proxy": False, "tls": False, "instances": [{"name": "a", "port": 8080, "host": "http://0.0.0.0"}]},
    ),
    "health host on another bind": ("health_host", {"proxy_bind": "10.0.0.5"}),
    "health host not bound by the engine": (
        "health_host",
        {
            "proxy": False,
            "tls": False,
            "health_host": "10.1.1.1",
            "instances": [{"name": "a", "port": 8080, "host": "10.0.0.5"}],
        },
    ),
    "ipv6 health host on ipv4 any": ("health_host", {"health_host": "::1"}),
    "health host with a scheme": ("health_host", {"health_host": "https://127.0.0.1"}),
    "health host empty": ("health_host", {"health_host": ""}),
    # A socket bound to one loopback address does not answer another.
    "ipv4 health host on an ipv6 loopback bind": ("health_host", {"proxy_bind": "::1"}),
    "health host 127.0.0.2 on 127.0.0.1": ("health_host", {"proxy_bind": "127.0.0.1", "health_host": "127.0.0.2"}),
    "ipv6 health host on an ipv4 loopback engine": (
        "health_host",
        {
            "proxy": False,
            "tls": False,
            "health_host": "::1",
            "instances": [{"name": "a", "port": 8080, "host": "127.0.0.1"}],
        },
    ),
    # Caches and the home the server writes: ProtectSystem=strict makes the rest read-only.
    "HF_HOME outside the writable paths": ("environment.HF_HOME", {"environment": {"HF_HOME": "/var/cache/hf"}}),
    "HOME relative": ("environment.HOME", {"environment": {"HOME": "vllm"}}),
    "cache root climbing out of the state dir": (
        "environment.VLLM_CACHE_ROOT",
        {"environment": {"VLLM_CACHE_ROOT": "/var/lib/vllm/../cache"}},
    ),
    "instance cache root in the install dir": (
        "instances[0].environment.VLLM_CACHE_ROOT",
        {"instances": [{"name": "a", "environment": {"VLLM_CACHE_ROOT": "/opt/vllm/cache"}}]},
    ),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_bad_value_fails_naming_the_variable(case):
    variable, overrides = FAILURES[case]
    fails("vllm_host_" + variable, **overrides)


def test_messages_say_why():
    assert "system account" in fails("vllm_host_user", user="root")
    assert "privileged" in fails(
        "vllm_host_instances[0].port", proxy=False, tls=False, **instances({"name": "a", "port": 443})
    )
    assert "already given to vllm@a" in fails(
        "vllm_host_instances[1].devices",
        profile="cuda",
        **instances({"name": "a", "devices": [0]}, {"name": "b", "port": 8001, "devices": [0]}),
    )
    assert "hides" in fails("vllm_host_instances[0].model", model_path="/home/u/m")
    assert "pinned release" in fails("vllm_host_version", version="latest")
    assert "would find nothing" in fails("vllm_host_health_host", proxy_bind="10.0.0.5")
    assert "must be a list, got str" in fails("vllm_host_extra_read_write_paths", extra_read_write_paths="/srv/x")


@pytest.mark.parametrize(
    ("overrides", "secret"),
    [
        ({"api_key": "0123456789 abcdef-s3cret"}, "abcdef-s3cret"),
        ({"api_key": "s3cret"}, "s3cret"),
        ({"hf_token": "hf_s3cret\nx"}, "hf_s3cret"),
        ({"environment": {"TOKEN": "s3cret-value\n"}}, "s3cret-value"),
        ({"instances": [{"name": "a", "extra_args": ["--api-key", "s3cret-arg"]}]}, "s3cret-arg"),
        ({"pip_find_links": ["https://u:s3cret-pw@m/w"]}, "s3cret-pw"),
    ],
)
def test_secret_values_are_never_echoed(overrides, secret):
    with pytest.raises(HostPlanError) as info:
        plan_host(settings(**overrides))
    assert secret not in str(info.value)


# --- helpers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "hidden"),
    [
        ("/home/u", "/home"),
        ("/home", "/home"),
        ("/homes/u", None),
        ("/root/x", "/root"),
        ("/run/user/1000", "/run/user"),
        ("/run/vllm", None),
        ("/tmp", "/tmp"),
        ("/var/tmp/x", "/var/tmp"),
        ("/srv/../home/u", "/home"),
        ("/srv/models", None),
    ],
)
def test_hidden_by_sandbox(path, hidden):
    assert vp.hidden_by_sandbox(path) == hidden


@pytest.mark.parametrize(
    ("word", "sets_index"),
    [
        ("-i", True),
        ("-ihttps://m/simple", True),
        ("--index-url", True),
        ("--index-url=https://m", True),
        ("--index", True),
        ("--extra-index-url", True),
        ("--extra-index", True),
        ("--ind", True),
        ("--in", False),  # ambiguous for pip (--isolated? no: --ignore-*, --index-url): refused by pip itself
        ("--no-index", False),
        ("--trusted-host", False),
        ("--ignore-installed", False),
        ("https://m/simple", False),
    ],
)
def test_pip_index_options(word, sets_index):
    assert vp._sets_pip_index(word) is sets_index


def test_type_names_are_the_builtin_ones():
    class TaggedStr(str):
        pass

    assert vp._type_name(TaggedStr("x")) == "str"
    assert vp._type_name(True) == "bool"
    assert vp._type_name(None) == "NoneType"


@pytest.mark.parametrize("word", ["--uds", "--ud", "--uds=/run/x.sock"])
def test_a_unix_socket_engine_is_refused_behind_the_proxy(word):
    fails("vllm_host_instances[0].extra_args[0]", "Unix socket", **instances({"name": "main", "extra_args": [word]}))


def test_hidden_stats_are_refused_while_the_watchdog_runs():
    fails(
        "vllm_host_instances[0].extra_args[0]",
        "watchdog",
        **instances({"name": "main", "extra_args": ["--disable-log-stats"]}),
    )
    plan_host(settings(watchdog=False, **instances({"name": "main", "extra_args": ["--disable-log-stats"]})))


def test_the_start_grace_covers_the_health_gate():
    fails("vllm_host_watchdog_start_grace", "health gate", watchdog_start_grace=60, health_timeout=300)
    plan_host(settings(watchdog=False, watchdog_start_grace=60, health_timeout=300))


def test_pip_values_are_never_echoed():
    secret = "https://user:pa55word@mirror/simple\n"
    message = fails("vllm_host_pip_index_url", pip_index_url=secret)
    assert "pa55word" not in message
    message = fails("vllm_host_pip_find_links[0]", pip_find_links=[secret])
    assert "pa55word" not in message
