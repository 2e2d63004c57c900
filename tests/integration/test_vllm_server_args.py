"""The rendered vLLM arguments are accepted by the real vLLM 0.32.0 argument parser, with the intended values.

No server is started: the vLLM virtualenv's own `make_arg_parser(FlexibleArgumentParser())` (the parser
`python -m vllm.entrypoints.openai.api_server` and `vllm serve` use) parses the argv the systemd unit and the
Kubernetes container get, and the argv the production-stack chart builds from the Helm values.

The same interpreter start also asks the parser which options take secrets and which spellings it reads as
them, so the secret-flag rule (``FORBIDDEN_FLAGS``) is checked against vLLM itself, not against a list.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.llmops.platform.plugins.module_utils import vllm_server as vs  # noqa: E402

VLLM_PYTHON = Path(os.environ.get("LLMOPS_VLLM_VENV", "/nonexistent")) / "bin" / "python"

# Runs inside the vLLM virtualenv: parse each argv with vLLM's own parser, print the values as JSON; then
# describe the parser (its options, which secret-looking ones store text) and try the candidate spellings
# of the secret flags, reporting which ones the parser reads as the flag.
PARSE = r"""
import contextlib, io, json, re, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
try:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
except ImportError:  # vLLM before the launchers package
    from vllm.entrypoints.openai.cli_args import make_arg_parser, validate_parsed_serve_args
import vllm
request = json.load(sys.stdin)
out = {"version": vllm.__version__, "parsed": []}
for argv in request["argvs"]:
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    validate_parsed_serve_args(args)
    values = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None), list))}
    values["model"] = args.model_tag or args.model
    values["lora_modules"] = None if args.lora_modules is None else {m.name: m.path for m in args.lora_modules}
    out["parsed"].append(values)

def parse_quietly(argv):
    # A fresh parser each time (about 5 ms); errors and --help exit, and print: keep stdout for the result.
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return vars(make_arg_parser(FlexibleArgumentParser()).parse_args(argv))
    except SystemExit:
        return None

parser = make_arg_parser(FlexibleArgumentParser())
out["parser"] = {
    "classes": [c.__name__ for c in type(parser).__mro__],
    "allow_abbrev": parser.allow_abbrev,
    "prefix_chars": parser.prefix_chars,
}
out["options"] = [{"strings": a.option_strings, "dest": a.dest} for a in parser._actions if a.option_strings]
probe, secret_name = request["probe"], re.compile(request["secret_name"])
out["secret_named"] = []
for action in parser._actions:
    for option in action.option_strings:
        if secret_name.search(option):
            got = parse_quietly([option, probe])
            stores_text = got is not None and probe in json.dumps(got[action.dest], default=str)
            out["secret_named"].append({"option": option, "dest": action.dest, "stores_text": stores_text})
out["spellings"] = []
for flag, argv in request["spellings"]:
    action = parser._option_string_actions.get(flag)
    got = parse_quietly(argv) if action is not None else None
    sets = got is not None and got[action.dest] != action.default
    out["spellings"].append({"flag": flag, "argv": argv, "sets": sets})
print("RESULT " + json.dumps(out, default=str))
"""

# Option names that look like they take a secret; those that store a text value must be classified in
# vs.FORBIDDEN_FLAGS or vs.REVIEWED_NOT_SECRET_FLAGS. A substring match on purpose: --hf-tokenfile, --apikey.
SECRET_NAME = r"(?i)key|token|secret|passw|passphrase|credential|auth|bearer|cookie"
PROBE = "pr0be-s3cret"


def candidate_spellings(flag):
    """Words that might reach ``flag``: each prefix, with - or _, as -- or -, upper case, =, JSON dot syntax."""
    name, candidates = flag[2:], []
    for end in range(1, len(name) + 1):
        stems = {name[:end], name[:end].replace("-", "_")}
        for stem in sorted(stems | {s.upper() for s in stems}):
            for lead in ("--", "-"):
                option = lead + stem
                candidates += [
                    [option],
                    [option, PROBE],
                    [f"{option}={PROBE}"],
                    [f"{option}.field", PROBE],
                    [f"{option}.field={PROBE}"],
                    [f"{option}.field+", PROBE],
                ]
    return candidates


CONFIGS = {
    "tiny-cpu": {
        "model": "/models/tiny",
        "served_model_name": "tiny",
        "host": "127.0.0.1",
        "port": 18123,
        "device": "cpu",
        "dtype": "float32",
        "max_model_len": 256,
        "max_num_seqs": 4,
        "enforce_eager": True,
        "kv_cache_memory_bytes": "64M",
    },
    "lora-cuda": {
        "model": "/models/base model",
        "served_model_name": ["base", "assistant"],
        "dtype": "bfloat16",
        "max_model_len": 8192,
        "tensor_parallel_size": 2,
        "pipeline_parallel_size": 2,
        "gpu_memory_utilization": 0.85,
        "trust_remote_code": True,
        "enable_lora": True,
        "lora_modules": {"sql": "/adapters/sql", "chat": "/adapters/chat v2"},
        "max_loras": 2,
        "max_lora_rank": 32,
        "enable_prefix_caching": False,
        "extra_args": ["--seed", "3", "--disable-log-stats", "--max-num-batched-tokens=2048"],
    },
    "defaults": {"model": "Qwen/Qwen2.5-0.5B-Instruct", "kv_cache_memory_bytes": 1073741824},
    "long-context": {"model": "/m", "max_model_len": 1048576, "enable_prefix_caching": True},
}

# vLLM's own defaults for what a config leaves unset (checked against the parser below).
VLLM_DEFAULTS = {"max_loras": 1, "max_lora_rank": 16}


def helm_spec(cfg):
    return vs.render_helm_model_spec(cfg, "m", "vllm/vllm-openai", "v0.32.0", container_port=cfg.get("port", 8000))


@pytest.fixture(scope="module")
def vllm():
    """Everything the tests ask vLLM's parser, from one interpreter start (importing vLLM takes ~30 s)."""
    if not VLLM_PYTHON.exists():
        pytest.skip("LLMOPS_VLLM_VENV is not set up (run through scripts/run after scripts/setup.sh)")
    argvs, index = [], {}
    for name, cfg in CONFIGS.items():
        index[name, "argv"] = len(argvs)
        argvs.append(vs.render_server_args(cfg))
        if cfg.get("host", "0.0.0.0") == "0.0.0.0":
            index[name, "helm"] = len(argvs)
            argvs.append(vs.effective_args_from_helm_model_spec(helm_spec(cfg)))
    request = {
        "argvs": argvs,
        "probe": PROBE,
        "secret_name": SECRET_NAME,
        "spellings": [[flag, argv] for flag in sorted(vs.FORBIDDEN_FLAGS) for argv in candidate_spellings(flag)],
    }
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, VLLM_TARGET_DEVICE="cpu", VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1")
        env["VLLM_CACHE_ROOT"] = cache
        done = subprocess.run(
            [str(VLLM_PYTHON), "-c", PARSE],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["version"] == "0.32.0"
    result["by_config"] = {key: result["parsed"][i] for key, i in index.items()}
    return result


@pytest.fixture(scope="module")
def parsed(vllm):
    """vLLM's parse of [argv, helm argv] for every config that the chart can take."""
    return vllm["by_config"]


def expected_values(cfg):
    norm = vs.normalize_server_config(cfg)
    values = {
        "model": norm["model"],
        "served_model_name": norm["served_model_name"],
        "host": norm["host"],
        "port": norm["port"],
        "dtype": norm["dtype"],
        "max_model_len": norm["max_model_len"],
        "tensor_parallel_size": norm["tensor_parallel_size"],
        "pipeline_parallel_size": norm["pipeline_parallel_size"],
        "max_num_seqs": norm["max_num_seqs"],
        "enforce_eager": norm["enforce_eager"],
        "trust_remote_code": norm["trust_remote_code"],
        "kv_cache_memory_bytes": (
            None if norm["kv_cache_memory_bytes"] is None else vs.size_to_bytes(norm["kv_cache_memory_bytes"])
        ),
        "lora_modules": norm["lora_modules"] or None,
        "max_loras": norm["max_loras"] or VLLM_DEFAULTS["max_loras"],
        "max_lora_rank": norm["max_lora_rank"] or VLLM_DEFAULTS["max_lora_rank"],
        "enable_prefix_caching": norm["enable_prefix_caching"],
    }
    if norm["gpu_memory_utilization"] is not None:
        values["gpu_memory_utilization"] = norm["gpu_memory_utilization"]
    return values


@pytest.mark.parametrize("name", CONFIGS)
def test_vllm_parses_the_rendered_argv_to_the_config(parsed, name):
    cfg = CONFIGS[name]
    got = parsed[name, "argv"]
    for key, value in expected_values(cfg).items():
        assert got[key] == value, f"{key}: vLLM parsed {got[key]!r}, the config says {value!r}"
    assert bool(got["enable_lora"]) is vs.normalize_server_config(cfg)["enable_lora"]
    assert got["api_key"] is None


def test_cpu_config_leaves_gpu_memory_utilization_at_vllm_default(parsed):
    defaults = parsed["defaults", "argv"]
    assert defaults["gpu_memory_utilization"] == 0.9  # rendered for cuda
    assert parsed["tiny-cpu", "argv"]["gpu_memory_utilization"] != 0.9  # not rendered: vLLM's own default


def test_extra_args_reach_vllm(parsed):
    got = parsed["lora-cuda", "argv"]
    assert got["seed"] == 3
    assert got["disable_log_stats"] is True
    assert got["max_num_batched_tokens"] == 2048


@pytest.mark.parametrize("name", [n for n, c in CONFIGS.items() if c.get("host", "0.0.0.0") == "0.0.0.0"])
def test_helm_values_give_vllm_the_same_settings(parsed, name):
    """What the chart starts vLLM with equals what the systemd unit and the container start it with."""
    from_argv = dict(parsed[name, "argv"])
    from_helm = dict(parsed[name, "helm"])
    if vs.normalize_server_config(CONFIGS[name])["enable_prefix_caching"] is None:
        # The chart always sets prefix caching; unset configs pin vLLM's generative default.
        assert from_helm.pop("enable_prefix_caching") is vs.HELM_PREFIX_CACHING_WHEN_UNSET
        assert from_argv.pop("enable_prefix_caching") is None
    # Positional model (`vllm serve MODEL`) versus --model: the same model either way.
    from_argv.pop("model_tag")
    from_helm.pop("model_tag")
    differing = {k: (from_argv[k], from_helm.get(k)) for k in from_argv if from_argv[k] != from_helm.get(k)}
    assert differing == {}


def test_parser_reads_abbreviations(vllm):
    """The spelling rule assumes argparse with allow_abbrev and '-' options, through FlexibleArgumentParser."""
    assert vllm["parser"]["allow_abbrev"] is True
    assert vllm["parser"]["prefix_chars"] == "-"
    assert vllm["parser"]["classes"][:2] == ["FlexibleArgumentParser", "ArgumentParser"]


def test_every_secret_taking_option_is_classified(vllm):
    """Options whose name looks secret and that store text are forbidden or reviewed; a new one fails here."""
    takes_text = {o["option"] for o in vllm["secret_named"] if o["stores_text"]}
    unclassified = takes_text - set(vs.FORBIDDEN_FLAGS) - set(vs.REVIEWED_NOT_SECRET_FLAGS)
    assert unclassified == set(), (
        f"vLLM options {sorted(unclassified)} may take secrets: add them to FORBIDDEN_FLAGS "
        "(with what to do instead) or, if their values are not secrets, to REVIEWED_NOT_SECRET_FLAGS"
    )
    # The classification is not stale: each entry is a text option of this vLLM whose name looks secret.
    assert set(vs.FORBIDDEN_FLAGS) <= takes_text
    assert set(vs.REVIEWED_NOT_SECRET_FLAGS) <= takes_text


@pytest.mark.parametrize("flag", sorted(vs.FORBIDDEN_FLAGS))
def test_every_spelling_vllm_reads_as_a_secret_flag_is_refused(vllm, flag):
    accepted = [s["argv"] for s in vllm["spellings"] if s["flag"] == flag and s["sets"]]
    for argv in accepted:
        with pytest.raises(vs.VllmConfigError) as caught:
            vs.normalize_server_config({"model": "m", "extra_args": argv})
        assert caught.value.field == "extra_args[0]", argv
        assert f"{flag} is not allowed" in str(caught.value), argv
        assert PROBE not in str(caught.value)
    # The probe found what the rule is about: _ for -, =, the JSON dot syntax and real abbreviations.
    words = {argv[0] for argv in accepted}
    underscored = "--" + flag[2:].replace("-", "_")
    assert {flag, underscored, f"{flag}={PROBE}", f"{underscored}={PROBE}", f"{flag}.field"} <= words
    abbreviations = {w.split("=", 1)[0].split(".", 1)[0] for w in words} - {flag, underscored}
    assert any(len(a) < len(flag) for a in abbreviations), words
    # Nothing but "--" words reaches it: no short option, no case folding.
    assert all(w.startswith("--") and w[2:].split("=")[0].split(".")[0].islower() for w in words), words


def test_no_other_vllm_option_is_refused_as_a_secret(vllm):
    """The prefix rule refuses no real option except the secret ones, in either spelling."""
    secret_dests = {o["dest"] for o in vllm["secret_named"] if o["option"] in vs.FORBIDDEN_FLAGS}
    refused = []
    for option in vllm["options"]:
        if option["dest"] in secret_dests:
            continue
        for word in option["strings"]:
            for spelling in (word, word[:2] + word[2:].replace("-", "_"), f"{word}=value"):
                if vs.forbidden_flag_for(spelling) is not None:
                    refused.append(spelling)
    assert refused == []


def test_abbreviations_of_field_flags_are_refused_and_no_real_option_is(vllm):
    """`--hos 0.0.0.0` after the rendered `--host 127.0.0.1` would win (argparse takes the last value): the
    abbreviation is refused; every real option vLLM has, other than the fields' own, still passes."""
    for word in ("--hos", "--por", "--served_model_n", "--served-model-n", "--max-model-l"):
        with pytest.raises(vs.VllmConfigError, match="abbreviates"):
            vs.normalize_server_config({"model": "m", "extra_args": [word, "1"]})
    owned = set(vs.OWNED_FLAGS)
    refused = [
        word
        for option in vllm["options"]
        for word in option["strings"]
        if word.startswith("--") and word not in owned and vs.owned_flag_abbreviated(word) is not None
    ]
    assert refused == []
