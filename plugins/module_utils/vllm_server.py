# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The vLLM server configuration model: one table of fields, one renderer.

Every layout starts from the same dictionary (``normalize_server_config``):

* the systemd instance runs ``python -m vllm.entrypoints.openai.api_server`` followed by
  ``systemd_exec_args(render_server_args(cfg))``;
* the Kubernetes container gets ``render_server_args(cfg)`` verbatim as its ``args:``;
* the vLLM production-stack Helm chart gets ``render_helm_model_spec(cfg, ...)``.

``effective_args_from_helm_model_spec`` replays what the chart's deployment template does with a
``modelSpec`` entry, and ``parse_server_args`` reads any of the three argument lists back into a
configuration, so tests can prove that the three layouts start vLLM with the same settings.

Pure Python, no Ansible imports, Python 3.8 compatible: it runs on the controller (filters) and is
importable by modules on targets.
"""

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

import json
import os
import re
from decimal import Decimal
from typing import Any, Dict, Iterable, List, Optional

# Field kinds (how a value is validated) and render styles (how it becomes argv).
RENDER_VALUE = "value"  # --flag VALUE
RENDER_SWITCH = "switch"  # --flag when true, nothing when false
RENDER_TRISTATE = "tristate"  # --flag / --no-flag / nothing when None
RENDER_MULTI = "multi"  # --flag V1 V2 ... (argparse nargs='+')
RENDER_LORA = "lora"  # --lora-modules name=path ... (sorted by name)
RENDER_VERBATIM = "verbatim"  # appended as they are (extra_args)
RENDER_NONE = "none"  # decides defaults and checks, never rendered (device)

DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
DEVICES = ("cuda", "cpu")
# vLLM 0.32.0 --max-lora-rank choices (argparse `choices` in vllm/engine/arg_utils.py).
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

# Helm's values are JSON numbers (float64) inside the chart, and the chart prints them with
# sprig's `quote` (Go's %v): 1000000 becomes "1e+06", which vLLM rejects. Integers at or above
# this bound are passed through vllmConfig.extraArgs as strings instead of chart keys.
HELM_FLOAT_EXPONENT_BOUND = 1000000

# The chart always renders --enable-prefix-caching or --no-enable-prefix-caching; it cannot say
# "let vLLM decide". When the field is unset the Helm values pin vLLM's default for generative
# models (prefix caching on), instead of the chart's silent fallback to --no-enable-prefix-caching.
HELM_PREFIX_CACHING_WHEN_UNSET = True

# Adapter names: a model name in requests and one word of --lora-modules NAME=PATH.
LORA_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
LORA_ADAPTER_KEYS = ("name", "path", "rank")
# What vLLM reads to allow POST /v1/load_lora_adapter and /v1/unload_lora_adapter (404 without it).
LORA_RUNTIME_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([kKmMgGtT])$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_TRUE_STRINGS = ("true", "yes", "on", "1")
_FALSE_STRINGS = ("false", "no", "off", "0")


class VllmConfigError(ValueError):
    """A configuration value is wrong. ``str()`` names the field path, e.g. ``vllm[1].port: ...``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Field:
    """One user-facing configuration key and the vLLM flag it renders."""

    __slots__ = (
        "aliases",
        "choices",
        "default",
        "description",
        "flag",
        "kind",
        "maximum",
        "minimum",
        "name",
        "nullable",
        "render",
        "required",
    )

    def __init__(
        self,
        name: str,
        kind: str,
        flag: Optional[str] = None,
        render: str = RENDER_VALUE,
        *,
        default: Any = None,
        required: bool = False,
        nullable: bool = True,
        minimum: Any = None,
        maximum: Any = None,
        choices: Optional[tuple] = None,
        aliases: tuple = (),
        description: str = "",
    ) -> None:
        self.name = name
        self.kind = kind  # str, int, float (minimum exclusive), bool, choice, size, str_list, lora, lora_adapters
        self.flag = flag
        self.render = render
        self.default = default
        self.required = required
        self.nullable = nullable  # None is a meaningful value ("let vLLM decide")
        self.minimum = minimum
        self.maximum = maximum
        self.choices = choices
        # Other spellings vLLM's parser accepts for the same option (checked in extra_args).
        self.aliases = aliases
        self.description = description


# The table. Its order is the order of the rendered argv.
FIELDS = (
    Field("model", "str", "--model", required=True, description="Model directory or Hugging Face id (required)."),
    Field(
        "served_model_name",
        "str_list",
        "--served-model-name",
        RENDER_MULTI,
        description="Name or list of names the OpenAI API serves the model as; default: the model path.",
    ),
    Field("host", "str", "--host", default="0.0.0.0", description="Address to bind."),  # noqa: S104
    Field("port", "int", "--port", default=8000, minimum=1, maximum=65535, description="TCP port."),
    Field("dtype", "choice", "--dtype", default="auto", choices=DTYPES, description="Weights and activations dtype."),
    Field("max_model_len", "int", "--max-model-len", minimum=1, description="Context length; default: the model's."),
    Field(
        "tensor_parallel_size",
        "int",
        "--tensor-parallel-size",
        default=1,
        minimum=1,
        aliases=("-tp",),
        description="Tensor parallel degree (GPUs per pipeline stage).",
    ),
    Field(
        "pipeline_parallel_size",
        "int",
        "--pipeline-parallel-size",
        default=1,
        minimum=1,
        aliases=("-pp",),
        description="Pipeline parallel stages.",
    ),
    Field(
        "gpu_memory_utilization",
        "float",
        "--gpu-memory-utilization",
        default=0.9,
        minimum=0.0,
        maximum=1.0,
        aliases=("--device-memory-utilization",),
        description="Fraction of GPU memory vLLM may use, 0 < x <= 1 (cuda only; never rendered for cpu).",
    ),
    Field("max_num_seqs", "int", "--max-num-seqs", minimum=1, description="Maximum sequences per batch."),
    Field("enforce_eager", "bool", "--enforce-eager", RENDER_SWITCH, default=False, description="No CUDA graphs."),
    Field(
        "trust_remote_code",
        "bool",
        "--trust-remote-code",
        RENDER_SWITCH,
        default=False,
        description="Run the model repository's own Python code.",
    ),
    Field(
        "kv_cache_memory_bytes",
        "size",
        "--kv-cache-memory-bytes",
        description="KV cache size in bytes or as a size such as 64M (K/M/G/T = 2^10.., k/m/g/t = 10^3..).",
    ),
    Field("enable_lora", "bool", "--enable-lora", RENDER_SWITCH, default=False, description="Serve LoRA adapters."),
    Field("lora_modules", "lora", "--lora-modules", RENDER_LORA, default={}, description="Adapter name -> path."),
    Field("max_loras", "int", "--max-loras", minimum=1, description="LoRA adapters in one batch."),
    Field(
        "max_lora_rank",
        "choice",
        "--max-lora-rank",
        choices=MAX_LORA_RANKS,
        description="Maximum LoRA rank; unset with lora_adapters: the smallest choice at least their largest rank.",
    ),
    Field(
        "lora_adapters",
        "lora_adapters",
        None,
        RENDER_NONE,
        default=[],
        description=(
            "Adapters served from the start, each {name, path, rank}: rendered into lora_modules (and enable_lora, "
            "max_lora_rank); names are letters, digits and ._- and differ from the served model names."
        ),
    ),
    Field(
        "lora_runtime_updating",
        "bool",
        None,
        RENDER_NONE,
        default=False,
        description=(
            "Allow loading and unloading adapters on the running server (POST /v1/load_lora_adapter, "
            "/v1/unload_lora_adapter): not a flag, it sets VLLM_ALLOW_RUNTIME_LORA_UPDATING=True in the environment."
        ),
    ),
    Field(
        "enable_prefix_caching",
        "bool",
        "--enable-prefix-caching",
        RENDER_TRISTATE,
        nullable=True,
        description="Unset lets vLLM decide; true/false render --enable-/--no-enable-prefix-caching.",
    ),
    Field(
        "shutdown_timeout",
        "int",
        "--shutdown-timeout",
        minimum=0,
        description="Seconds a stopping server lets requests in flight finish (drain); 0 aborts them (vLLM's default).",
    ),
    Field(
        "device",
        "choice",
        None,
        RENDER_NONE,
        default="cuda",
        choices=DEVICES,
        description="cuda or cpu; not a flag: it decides defaults and what is allowed.",
    ),
    Field(
        "extra_args",
        "str_list",
        None,
        RENDER_VERBATIM,
        default=[],
        description="More vLLM arguments, appended verbatim after every field.",
    ),
)

FIELDS_BY_NAME = {f.name: f for f in FIELDS}

# Flags whose values are secrets: they must never be in argv, which anyone on the host can read
# (ps, /proc/PID/cmdline) and which is copied into unit files, pod specs, Helm values and logs.
# Flag -> what to do instead. extra_args refuse every spelling vLLM's parser accepts for them
# (``forbidden_flag_for``). tests/integration/test_vllm_server_args.py derives the list from
# vLLM's own parser: every option whose name looks secret (contains key, token, secret, passw,
# credential, auth, ...: SECRET_NAME there) and that stores a text value must be here or in
# REVIEWED_NOT_SECRET_FLAGS.
FORBIDDEN_FLAGS = {
    "--api-key": (
        "set the VLLM_API_KEY environment variable instead (vllm_host_api_key writes it to the "
        "instance's 0600 environment file; vllm_k8s_api_key / a Kubernetes Secret gives it to the container)"
    ),
    "--hf-token": (
        "set the HF_TOKEN environment variable instead (hosts: an instance's environment, written to "
        "its 0600 environment file; Kubernetes: from a Secret); Hugging Face downloads read it, and "
        "the cached login token, without any flag"
    ),
}

# vLLM options whose names look secret but whose values are not (reviewed for vLLM 0.32.0).
REVIEWED_NOT_SECRET_FLAGS = {
    "--ssl-keyfile": "a path to the TLS private key file, not the key; keep the file itself 0600",
    "--tokenizer": "a tokenizer name or path",
    "--tokenizer-mode": "a tokenizer implementation name (auto, slow, mistral, ...)",
    "--tokenizer-revision": "a tokenizer repository revision",
}

# Shortest option name refused as an abbreviation of a forbidden flag: "--" and 2 characters.
_MIN_ABBREVIATION = 4
# A URL whose authority has user info (``scheme://user:password@``, ``scheme://token@``); also
# inside JSON values, where "/" may be written "\/". The user info stops at the authority's end.
_URL_USERINFO_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?://|\\/\\/)[^/\\?#@\s\"']+@")


def _path(prefix: Optional[str], name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_STRINGS + _FALSE_STRINGS:
        return value.strip().lower() in _TRUE_STRINGS
    raise VllmConfigError(where, f"must be a boolean, got {_describe(value)}")


def _as_int(value: Any) -> Optional[int]:
    """The integer ``value`` stands for, or None. Inventory values may be strings."""
    if isinstance(value, bool):  # bool is an int subclass, but `port: true` is a mistake, not 1
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.match(r"^\s*[+-]?\d+\s*$", value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _int_range_text(field: Field) -> str:
    if field.minimum is not None and field.maximum is not None:
        return f"an integer between {field.minimum} and {field.maximum}"
    return f"an integer >= {field.minimum}"


def size_to_bytes(value: Any) -> int:
    """Bytes for a size as vLLM's ``human_readable_int`` reads it: k=10^3 .. t=10^12, K=2^10 .. T=2^40."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    match = _SIZE_RE.match(text)
    if match:
        number, suffix = match.groups()
        if suffix.islower():
            return int(float(number) * 10 ** (3 * "kmgt".index(suffix) + 3))
        if "." in number:
            raise ValueError(f"decimals are not allowed with binary suffixes like {suffix}: {text!r}")
        return int(number) * 2 ** (10 * "KMGT".index(suffix) + 10)
    if re.match(r"^\d+$", text):
        return int(text)
    raise ValueError(f"not a size: {text!r}")


def _check_word(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise VllmConfigError(where, f"must be a non-empty string, got {_describe(value)}")
    if value != value.strip():
        raise VllmConfigError(where, f"must not start or end with whitespace, got {value!r}")
    if value.startswith("-"):  # argparse would read it as the next option
        raise VllmConfigError(where, f"must not start with '-', got {value!r}")
    return value


def _normalize_value(field: Field, value: Any, where: str) -> Any:
    kind = field.kind
    if kind == "str":
        return _check_word(value, where)
    if kind == "bool":
        return _as_bool(value, where)
    if kind == "int":
        number = _as_int(value)
        if (
            number is None
            or (field.minimum is not None and number < field.minimum)
            or (field.maximum is not None and number > field.maximum)
        ):
            raise VllmConfigError(where, f"must be {_int_range_text(field)}, got {value!r}")
        return number
    if kind == "float":
        try:
            number = None if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            number = None
        # `not (a < x <= b)` is also true for NaN
        if number is None or not (field.minimum < number <= field.maximum):
            raise VllmConfigError(
                where, f"must be a number greater than {field.minimum} and at most {field.maximum}, got {value!r}"
            )
        return number
    if kind == "choice":
        candidate = _as_int(value) if isinstance(field.choices[0], int) else value
        if candidate not in field.choices:
            raise VllmConfigError(
                where, "must be one of {}, got {!r}".format(", ".join(str(c) for c in field.choices), value)
            )
        return candidate
    if kind == "size":
        try:
            number = size_to_bytes(value)
        except ValueError as exc:
            raise VllmConfigError(where, f"must be a number of bytes or a size such as 64M ({exc})") from None
        if number <= 0:
            raise VllmConfigError(where, f"must be a positive number of bytes, got {value!r}")
        return value if isinstance(value, int) else str(value).strip()
    if kind == "str_list":
        return _normalize_str_list(field, value, where)
    if kind == "lora":
        return _normalize_lora_modules(value, where)
    if kind == "lora_adapters":
        return _normalize_lora_adapters(value, where)
    raise AssertionError(f"unknown field kind {kind}")  # pragma: no cover - a bug in the table


def _normalize_str_list(field: Field, value: Any, where: str) -> List[str]:
    if field.name == "served_model_name" and isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise VllmConfigError(where, f"must be a list of strings, got {_describe(value)}")
    result = []
    for i, item in enumerate(value):
        item_where = f"{where}[{i}]"
        if field.name == "extra_args":
            # YAML reads `- 4` as an int; as an argv word it is its text.
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise VllmConfigError(item_where, f"must be a string, got {_describe(item)}")
            result.append(str(item))
        else:
            result.append(_check_word(item, item_where))
    if field.name == "served_model_name":
        if not result:
            raise VllmConfigError(where, "must name at least one model (or be left unset)")
        if len(set(result)) != len(result):
            raise VllmConfigError(where, f"must not repeat a name, got {result!r}")
    return result


def _check_adapter_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not LORA_NAME_RE.match(name):
        raise VllmConfigError(
            where,
            "adapter names are letters, digits and ._- (at most 64, starting with a letter or digit; no '=', '/' or "
            f"spaces: the name is a model name in every request and a word of --lora-modules), got {name!r}",
        )
    return name


def _check_adapter_path(value: Any, where: str) -> str:
    path = _check_word(value, where)
    if ".." in path.split("/"):
        raise VllmConfigError(
            where, f"must not contain a '..' component (it would leave the adapters' directory), got {path!r}"
        )
    return path


def _normalize_lora_modules(value: Any, where: str) -> Dict[str, str]:
    if not isinstance(value, dict):
        raise VllmConfigError(where, f"must be a mapping of adapter name to path, got {_describe(value)}")
    result = {}
    for name in sorted(value, key=str):
        item_where = f"{where}.{name}"
        _check_adapter_name(name, item_where)
        result[name] = _check_adapter_path(value[name], item_where)
    return result


def _normalize_lora_adapters(value: Any, where: str) -> List[Dict[str, Any]]:
    """A list of {name, path, rank}: names checked and unique, paths without '..', rank an integer or None."""
    if not isinstance(value, (list, tuple)):
        raise VllmConfigError(where, f"must be a list of adapters ({{name, path, rank}}), got {_describe(value)}")
    result = []  # type: List[Dict[str, Any]]
    for i, item in enumerate(value):
        item_where = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise VllmConfigError(item_where, f"must be a mapping with name and path, got {_describe(item)}")
        for key in sorted((k for k in item if k not in LORA_ADAPTER_KEYS), key=str):
            raise VllmConfigError(
                f"{item_where}.{key}", "unknown key; known keys: {}".format(", ".join(LORA_ADAPTER_KEYS))
            )
        for key in ("name", "path"):
            if item.get(key) is None:
                raise VllmConfigError(f"{item_where}.{key}", "is required")
        name = _check_adapter_name(item["name"], f"{item_where}.name")
        if name in (a["name"] for a in result):
            raise VllmConfigError(f"{item_where}.name", f"adapter {name!r} is declared twice")
        rank = item.get("rank")
        if rank is not None:
            rank = _as_int(rank)
            if rank is None or not 1 <= rank <= MAX_LORA_RANKS[-1]:
                raise VllmConfigError(
                    f"{item_where}.rank",
                    "must be the adapter's LoRA rank (`r` in its adapter_config.json), an integer between 1 and "
                    "{}, got {!r}".format(MAX_LORA_RANKS[-1], item.get("rank")),
                )
        result.append({"name": name, "path": _check_adapter_path(item["path"], f"{item_where}.path"), "rank": rank})
    return result


def _apply_lora_adapters(result: Dict[str, Any], path: Optional[str]) -> None:
    """Fold lora_adapters into enable_lora, lora_modules and max_lora_rank; check names against served names."""
    adapters = result["lora_adapters"]
    where = _path(path, "lora_adapters")
    served = result["served_model_name"] or [result["model"]]
    modules = dict(result["lora_modules"])
    for name in sorted(modules):
        if name in served:
            raise VllmConfigError(
                f"{_path(path, 'lora_modules')}.{name}",
                "is also a served model name: requests could not tell them apart",
            )
    for i, adapter in enumerate(adapters):
        name = adapter["name"]
        if name in served:
            raise VllmConfigError(
                f"{where}[{i}].name",
                f"{name!r} is also a served model name (served_model_name): requests could not tell them apart",
            )
        if modules.get(name, adapter["path"]) != adapter["path"]:
            raise VllmConfigError(
                f"{where}[{i}].name", f"{name!r} is also in lora_modules with another path; declare it once"
            )
        modules[name] = adapter["path"]
    if adapters:
        result["enable_lora"] = True
    result["lora_modules"] = modules
    ranks = [a["rank"] for a in adapters if a["rank"] is not None]
    if ranks:
        largest = max(ranks)
        if result["max_lora_rank"] is None:
            result["max_lora_rank"] = min(r for r in MAX_LORA_RANKS if r >= largest)
        elif result["max_lora_rank"] < largest:
            i = next(i for i, a in enumerate(adapters) if a["rank"] == largest)
            raise VllmConfigError(
                f"{where}[{i}].rank",
                "is {}, above max_lora_rank {}: vLLM refuses to start; raise max_lora_rank or leave it unset".format(
                    largest, result["max_lora_rank"]
                ),
            )


def lora_adapter_rank(adapter_dir: str) -> int:
    """The LoRA rank (``r``) of a PEFT adapter directory, from its adapter_config.json."""
    with open(os.path.join(adapter_dir, "adapter_config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    rank = config.get("r") if isinstance(config, dict) else None
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{adapter_dir}/adapter_config.json has no LoRA rank `r` (a positive integer): {rank!r}")
    return rank


def server_environment(cfg: Dict[str, Any]) -> Dict[str, str]:
    """Environment variables a normalized configuration needs besides its argv (the same in every layout)."""
    env = {}  # type: Dict[str, str]
    if cfg.get("lora_runtime_updating"):
        env[LORA_RUNTIME_ENV] = "True"
    return env


def _flag_key(token: str) -> str:
    """The canonical spelling of an option word: vLLM accepts ``_`` for ``-`` and ``--x=v``."""
    if token.startswith("--"):
        return "--" + token[2:].split("=", 1)[0].replace("_", "-")
    return token.split("=", 1)[0]


def _owned_flags() -> Dict[str, str]:
    owned = {}
    for field in FIELDS:
        if not field.flag:
            continue
        for spelling in (field.flag, *field.aliases):
            owned[spelling] = field.name
        if field.render in (RENDER_SWITCH, RENDER_TRISTATE):
            owned["--no-" + field.flag[2:]] = field.name
    return owned


# Every spelling of every flag a field renders -> the field's name.
OWNED_FLAGS = _owned_flags()


def _option_name(token: str) -> Optional[str]:
    """The long option a word names as vLLM's FlexibleArgumentParser reads it, or None.

    It splits ``--name=value``, turns ``_`` into ``-`` and reads ``--name.key value`` (a JSON
    field) as ``--name``; argparse then accepts any unambiguous prefix of an option's name.
    """
    if not token.startswith("--"):
        return None  # "-x" words only reach vLLM's short options, none of which takes a secret
    return "--" + token[2:].split("=", 1)[0].split(".", 1)[0].replace("_", "-")


def forbidden_flag_for(token: str) -> Optional[str]:
    """The FORBIDDEN_FLAGS flag that the argv word ``token`` spells, or None.

    Every spelling vLLM's parser may read as that flag counts: ``--api_key``, ``--api-key=X``,
    ``--api-key.field X`` and every abbreviation of two or more characters (``--api-k``, ``--hf``);
    ambiguous abbreviations, which argparse rejects anyway, are refused too.
    """
    name = _option_name(token)
    if name is None or len(name) < _MIN_ABBREVIATION:
        return None
    for flag in sorted(FORBIDDEN_FLAGS):
        if flag.startswith(name):
            return flag
    return None


def has_url_credentials(token: str) -> bool:
    """Whether ``token`` holds a URL with user info (``https://user:password@host``, ``https://token@host``)."""
    return _URL_USERINFO_RE.search(token) is not None


def _check_extra_args(args: List[str], where: str) -> None:
    # The messages never repeat the word: it may hold the secret.
    for i, token in enumerate(args):
        flag = forbidden_flag_for(token)
        if flag is not None:
            spelled = "" if _option_name(token) == flag else f" ({_option_name(token)} abbreviates it)"
            raise VllmConfigError(
                f"{where}[{i}]", f"{flag} is not allowed{spelled}: secrets never go in argv; {FORBIDDEN_FLAGS[flag]}"
            )
        if has_url_credentials(token):
            raise VllmConfigError(
                f"{where}[{i}]",
                "contains a URL with credentials (user info before '@'): secrets never go in argv; "
                "pass them in the environment (0600 environment file, Kubernetes Secret) or a file",
            )
        key = _flag_key(token)
        if key in OWNED_FLAGS:
            name = OWNED_FLAGS[key]
            raise VllmConfigError(f"{where}[{i}]", f"{token} is rendered from the field {name}; set {name} instead")
        owned = owned_flag_abbreviated(token)
        if owned is not None:
            name = OWNED_FLAGS[owned]
            raise VllmConfigError(
                f"{where}[{i}]",
                f"{_option_name(token)} abbreviates {owned}, which is rendered from the field {name} (argparse takes "
                f"the last value, so it would override it); set {name} instead",
            )


def owned_flag_abbreviated(token: str) -> Optional[str]:
    """The field-owned flag that ``token`` abbreviates (argparse accepts unambiguous prefixes), or None.

    ``--hos 0.0.0.0`` after the rendered ``--host 127.0.0.1`` would move an engine off loopback.
    """
    name = _option_name(token)
    if name is None or len(name) < _MIN_ABBREVIATION or name in OWNED_FLAGS:
        return None
    matches = sorted(flag for flag in OWNED_FLAGS if flag.startswith("--") and flag.startswith(name))
    return matches[0] if matches else None


def normalize_server_config(cfg: Any, path: Optional[str] = None) -> Dict[str, Any]:
    """Validate ``cfg``, fill in defaults and return a new dict with every field; idempotent.

    ``path`` prefixes field names in errors: with ``vllm_host_instances[1]`` a bad port reads
    ``vllm_host_instances[1].port: must be an integer between 1 and 65535, got 70000``.
    """
    if not isinstance(cfg, dict):
        raise VllmConfigError(path or "config", f"must be a mapping, got {_describe(cfg)}")
    for key in sorted((k for k in cfg if k not in FIELDS_BY_NAME), key=str):
        hint = " (secrets never go in argv: set VLLM_API_KEY in the environment)" if key == "api_key" else ""
        raise VllmConfigError(
            _path(path, str(key)), "unknown key{}; known keys: {}".format(hint, ", ".join(FIELDS_BY_NAME))
        )

    # The device decides defaults and what is allowed, so it is read first.
    device_field = FIELDS_BY_NAME["device"]
    device = cfg.get("device")
    device = device_field.default if device is None else _normalize_value(device_field, device, _path(path, "device"))
    result = {}  # type: Dict[str, Any]
    for field in FIELDS:
        where = _path(path, field.name)
        value = cfg.get(field.name)
        if field.name == "device":
            result[field.name] = device
        elif field.name == "gpu_memory_utilization" and device == "cpu":
            if value is not None:
                raise VllmConfigError(
                    where, "is not used on the cpu device; size the KV cache with kv_cache_memory_bytes instead"
                )
            result[field.name] = None
        elif value is None:
            if field.required:
                raise VllmConfigError(where, "is required")
            # Copies, so callers can never change the table's mutable defaults.
            result[field.name] = type(field.default)(field.default) if field.default is not None else None
        else:
            result[field.name] = _normalize_value(field, value, where)

    if result["lora_adapters"] and cfg.get("enable_lora") is not None and not result["enable_lora"]:
        raise VllmConfigError(_path(path, "enable_lora"), "is false, but lora_adapters lists adapters")
    _apply_lora_adapters(result, path)
    if not result["enable_lora"]:
        for name in ("lora_modules", "max_loras", "max_lora_rank", "lora_runtime_updating"):
            if result[name]:
                raise VllmConfigError(_path(path, name), "requires enable_lora: true")
    _check_extra_args(result["extra_args"], _path(path, "extra_args"))
    return result


def _format_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _render_fields(cfg: Dict[str, Any], names: Iterable[str]) -> List[str]:
    """argv for the given fields of a normalized config, in the table's order."""
    wanted = set(names)
    args = []  # type: List[str]
    for field in FIELDS:
        if field.name not in wanted:
            continue
        value = cfg[field.name]
        if field.render == RENDER_VALUE:
            if value is not None:
                args += [field.flag, _format_value(value)]
        elif field.render == RENDER_SWITCH:
            if value:
                args.append(field.flag)
        elif field.render == RENDER_TRISTATE:
            if value is not None:
                args.append(field.flag if value else "--no-" + field.flag[2:])
        elif field.render == RENDER_MULTI:
            if value:
                args += [field.flag, *value]
        elif field.render == RENDER_LORA:
            if value:
                args += [field.flag, *(f"{name}={value[name]}" for name in sorted(value))]
        elif field.render == RENDER_VERBATIM:
            args += value
    return args


def render_server_args(cfg: Dict[str, Any], path: Optional[str] = None) -> List[str]:
    """The vLLM argv after the program: every word a string, always in the table's order.

    The same list is the systemd ExecStart tail (through ``systemd_exec_args``) and the
    Kubernetes container ``args:``.
    """
    return _render_fields(normalize_server_config(cfg, path), FIELDS_BY_NAME)


def systemd_exec_args(args: Iterable[Any]) -> str:
    """Quote argv words for an ``ExecStart=`` line (systemd.service(5), "Command lines").

    Each word is double-quoted, so spaces and a lone ``;`` stay inside one argument. systemd
    C-unescapes quoted words, so ``\\`` and ``"`` are backslash-escaped and control characters
    become ``\\xNN``; it also expands ``%`` specifiers and ``$VAR``, so ``%`` is written ``%%`` and
    ``$`` is written ``$$``.
    """
    words = []
    for arg in args:
        text = arg if isinstance(arg, str) else _format_value(arg)
        if "\x00" in text:
            raise ValueError(f"an ExecStart argument cannot contain a NUL character: {text!r}")
        out = []
        for char in text:
            if char == "\\":
                out.append("\\\\")
            elif char == '"':
                out.append('\\"')
            elif char == "%":
                out.append("%%")
            elif char == "$":
                out.append("$$")
            elif ord(char) < 32 or ord(char) == 127:
                out.append(f"\\x{ord(char):02x}")
            else:
                out.append(char)
        words.append('"{}"'.format("".join(out)))
    return " ".join(words)


# The chart's vllmConfig keys (helm/templates/deployment-vllm-multi.yaml) and the fields they carry.
HELM_VLLM_CONFIG_KEYS = (
    ("maxModelLen", "max_model_len"),
    ("dtype", "dtype"),
    ("tensorParallelSize", "tensor_parallel_size"),
    ("maxNumSeqs", "max_num_seqs"),
    ("gpuMemoryUtilization", "gpu_memory_utilization"),
    ("maxLoras", "max_loras"),
)
# Fields the chart renders from its own keys; every other field goes through vllmConfig.extraArgs.
_HELM_OWN_FIELDS = {"model", "host", "port", "enable_lora", "enable_prefix_caching", "extra_args", "device"}
_HELM_OWN_FIELDS.update(field for _key, field in HELM_VLLM_CONFIG_KEYS)
_HELM_RESERVED_SPEC_KEYS = ("enableLoRA", "vllmConfig", "enableTool", "toolCallParser", "chatTemplate")


def render_helm_model_spec(
    cfg: Dict[str, Any],
    name: str,
    image_repo: str,
    image_tag: str,
    *,
    replica_count: int = 1,
    request_gpu: Optional[int] = None,
    request_cpu: Optional[int] = None,
    request_memory: Optional[str] = None,
    pvc_storage: Optional[str] = None,
    container_port: int = 8000,
    extra: Optional[Dict[str, Any]] = None,
    path: Optional[str] = None,
) -> Dict[str, Any]:
    """One ``servingEngineSpec.modelSpec[]`` entry for the vLLM production-stack Helm chart.

    Based on vllm-project/production-stack: ``helm/values.yaml`` (the documented modelSpec and
    vllmConfig keys), ``helm/values.schema.json`` (name, repository, tag, modelURL, replicaCount,
    requestCPU, requestMemory, requestGPU and pvcStorage are required there) and
    ``helm/templates/deployment-vllm-multi.yaml`` (how the keys become vLLM flags). The chart models
    ``enableLoRA`` and, in ``vllmConfig``, enablePrefixCaching, maxModelLen, dtype,
    tensorParallelSize, maxNumSeqs, gpuMemoryUtilization and maxLoras; every other flag is rendered
    by the one renderer into ``vllmConfig.extraArgs``. The chart always serves on
    ``--host 0.0.0.0 --port <servingEngineSpec.containerPort>``, so the config must agree with both.
    ``extra`` adds other modelSpec keys (resources, nodeSelectorTerms, env, ...), never ones that
    carry server flags.
    """
    cfg = normalize_server_config(cfg, path)
    if not isinstance(name, str) or not _DNS_LABEL_RE.match(name):
        raise VllmConfigError(
            _path(path, "name"), f"must be a DNS label (lowercase letters, digits, '-'), got {name!r}"
        )
    for label, value in (("image_repo", image_repo), ("image_tag", image_tag)):
        if not isinstance(value, str) or not value:
            raise VllmConfigError(_path(path, label), f"must be a non-empty string, got {value!r}")
    if cfg["host"] != "0.0.0.0":  # noqa: S104
        raise VllmConfigError(
            _path(path, "host"), "the production-stack chart always binds 0.0.0.0, got {!r}".format(cfg["host"])
        )
    if cfg["port"] != container_port:
        raise VllmConfigError(
            _path(path, "port"),
            "the production-stack chart serves on servingEngineSpec.containerPort ({}), got {}".format(
                container_port, cfg["port"]
            ),
        )

    prefix_caching = cfg["enable_prefix_caching"]
    vllm_config = {"enablePrefixCaching": HELM_PREFIX_CACHING_WHEN_UNSET if prefix_caching is None else prefix_caching}  # type: Dict[str, Any]
    spilled = []  # chart keys whose value the chart would print wrongly
    for key, field_name in HELM_VLLM_CONFIG_KEYS:
        value = cfg[field_name]
        if value is None:
            continue
        if isinstance(value, int) and value >= HELM_FLOAT_EXPONENT_BOUND:
            spilled.append(field_name)
        else:
            vllm_config[key] = value
    extra_args = _render_fields(cfg, spilled)
    extra_args += _render_fields(cfg, set(FIELDS_BY_NAME) - _HELM_OWN_FIELDS)
    extra_args += cfg["extra_args"]
    if extra_args:
        vllm_config["extraArgs"] = extra_args

    if request_gpu is None:
        request_gpu = 0 if cfg["device"] == "cpu" else cfg["tensor_parallel_size"] * cfg["pipeline_parallel_size"]
    spec = {
        "name": name,
        "repository": image_repo,
        "tag": image_tag,
        "modelURL": cfg["model"],
        "replicaCount": replica_count,
        "requestGPU": request_gpu,
        "vllmConfig": vllm_config,
    }  # type: Dict[str, Any]
    if cfg["enable_lora"]:
        spec["enableLoRA"] = True
    for key, value in (("requestCPU", request_cpu), ("requestMemory", request_memory), ("pvcStorage", pvc_storage)):
        if value is not None:
            spec[key] = value
    for key in sorted(extra or {}):
        if key in spec or key in _HELM_RESERVED_SPEC_KEYS:
            raise VllmConfigError(
                _path(path, f"extra.{key}"), "is set from the server config or the arguments; change those instead"
            )
        spec[key] = extra[key]  # type: ignore[index]
    return spec


def _go_value(value: Any) -> str:
    """What sprig's ``quote`` prints for a Helm value: Go's %v, and numbers in values are float64."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, (int, float)):
        return f"{value}"
    number = Decimal(repr(float(value))).normalize()
    if number == 0:
        return "0"
    sign, digit_tuple, exponent = number.as_tuple()
    digits = "".join(str(d) for d in digit_tuple)
    point = len(digits) + int(exponent)  # where the decimal point falls within the digits
    minus = "-" if sign else ""
    exp = point - 1
    if exp < -4 or exp >= 6:  # %g with the shortest precision: exponent form from 1e6 and below 1e-4
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{minus}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return "{}0.{}{}".format(minus, "0" * -point, digits)
    if point >= len(digits):
        return minus + digits + "0" * (point - len(digits))
    return f"{minus}{digits[:point]}.{digits[point:]}"


def effective_args_from_helm_model_spec(spec: Dict[str, Any], container_port: int = 8000) -> List[str]:
    """The argv after ``vllm serve`` that the chart's deployment template builds for ``spec``.

    A replay of the container ``command`` in production-stack
    ``helm/templates/deployment-vllm-multi.yaml``: the model is positional, host and port are
    fixed, two flags are spelled with underscores (vLLM's parser accepts both), and values go
    through ``quote`` (Go's %v of a float64 for numbers).
    """
    args = [_go_value(spec["modelURL"]), "--host", "0.0.0.0", "--port", _go_value(container_port)]  # noqa: S104
    if spec.get("enableLoRA"):
        args.append("--enable-lora")
    if spec.get("enableTool"):
        args.append("--enable-auto-tool-choice")
    if spec.get("toolCallParser"):
        args += ["--tool-call-parser", _go_value(spec["toolCallParser"])]
    config = spec.get("vllmConfig")
    if config:  # {{- with $modelSpec.vllmConfig }}
        if "enableChunkedPrefill" in config:
            args.append("--enable-chunked-prefill" if config["enableChunkedPrefill"] else "--no-enable-chunked-prefill")
        args.append("--enable-prefix-caching" if config.get("enablePrefixCaching") else "--no-enable-prefix-caching")
        for key, flag in (
            ("maxModelLen", "--max-model-len"),
            ("dtype", "--dtype"),
            ("tensorParallelSize", "--tensor-parallel-size"),
            ("maxNumSeqs", "--max-num-seqs"),
            ("gpuMemoryUtilization", "--gpu_memory_utilization"),
            ("maxLoras", "--max_loras"),
        ):
            if key in config:
                args += [flag, _go_value(config[key])]
        args += [_go_value(word) for word in config.get("extraArgs") or []]
    if spec.get("chatTemplate"):
        args += ["--chat-template", "/templates/{}".format(spec["chatTemplate"])]
    return args


def parse_server_args(args: Iterable[str]) -> Dict[str, Any]:
    """Read an argv from any of the renderers back into a normalized configuration.

    The inverse of ``render_server_args`` for the flags the fields own; every other word is kept,
    in order, in ``extra_args``. A leading positional word is the model (``vllm serve MODEL``).
    The renderers write ``--gpu-memory-utilization`` for cuda and never for cpu, so its absence
    means the cpu device. It knows only the fields' flags: a test and diagnosis aid, not a vLLM
    argument parser.
    """
    words = list(args)
    cfg = {}  # type: Dict[str, Any]
    extra = []  # type: List[str]
    i = 0
    if words and not words[0].startswith("-"):
        cfg["model"] = words[0]
        i = 1
    while i < len(words):
        token = words[i]
        key = _flag_key(token)
        name = OWNED_FLAGS.get(key)
        i += 1
        if name is None:
            extra.append(token)
            continue
        field = FIELDS_BY_NAME[name]
        inline = token.split("=", 1)[1] if "=" in token else None
        if field.render in (RENDER_SWITCH, RENDER_TRISTATE):
            cfg[name] = not key.startswith("--no-")
        elif field.render in (RENDER_MULTI, RENDER_LORA):
            values = [] if inline is None else [inline]
            while i < len(words) and not words[i].startswith("-"):
                values.append(words[i])
                i += 1
            cfg[name] = dict(v.split("=", 1) for v in values) if field.render == RENDER_LORA else values
        else:
            if inline is None and i < len(words):
                inline = words[i]
                i += 1
            cfg[name] = inline
    cfg["extra_args"] = extra
    cfg["device"] = "cuda" if "gpu_memory_utilization" in cfg else "cpu"
    return normalize_server_config(cfg)
