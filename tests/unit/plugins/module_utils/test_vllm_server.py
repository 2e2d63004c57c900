"""The vLLM server configuration model: validation, rendering, quoting, and the three layouts agreeing."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.llmops.platform.plugins.module_utils import vllm_server as vs  # noqa: E402

TINY = {"model": "/models/tiny", "served_model_name": "tiny"}

CPU_TINY = {
    "model": "/models/tiny",
    "served_model_name": "tiny",
    "device": "cpu",
    "dtype": "float32",
    "max_model_len": 256,
    "max_num_seqs": 4,
    "enforce_eager": True,
    "kv_cache_memory_bytes": "64M",
}

LORA = {
    "model": "/models/base",
    "served_model_name": ["base", "assistant"],
    "max_model_len": 8192,
    "tensor_parallel_size": 2,
    "gpu_memory_utilization": 0.85,
    "enable_lora": True,
    "lora_modules": {"sql": "/adapters/sql", "chat": "/adapters/chat v2"},
    "max_loras": 2,
    "max_lora_rank": 32,
    "enable_prefix_caching": False,
    "trust_remote_code": True,
    "extra_args": ["--disable-log-requests", "--swap-space", 4],
}

ALL_CONFIGS = [TINY, CPU_TINY, LORA]


def error_of(cfg, path=None):
    with pytest.raises(vs.VllmConfigError) as info:
        vs.normalize_server_config(cfg, path)
    return info.value


class TestDefaults:
    def test_minimal_config_fills_every_field(self):
        cfg = vs.normalize_server_config({"model": "/m"})
        assert set(cfg) == set(vs.FIELDS_BY_NAME)
        assert cfg["host"] == "0.0.0.0"
        assert cfg["port"] == 8000
        assert cfg["dtype"] == "auto"
        assert cfg["tensor_parallel_size"] == 1
        assert cfg["pipeline_parallel_size"] == 1
        assert cfg["gpu_memory_utilization"] == 0.9
        assert cfg["device"] == "cuda"
        assert cfg["served_model_name"] is None
        assert cfg["enable_prefix_caching"] is None
        assert cfg["lora_modules"] == {}
        assert cfg["extra_args"] == []

    def test_minimal_argv(self):
        assert vs.render_server_args({"model": "/m"}) == [
            "--model", "/m", "--host", "0.0.0.0", "--port", "8000", "--dtype", "auto",
            "--tensor-parallel-size", "1", "--pipeline-parallel-size", "1", "--gpu-memory-utilization", "0.9",
        ]  # fmt: skip

    def test_cpu_device_omits_gpu_memory_utilization(self):
        cfg = vs.normalize_server_config({"model": "/m", "device": "cpu"})
        assert cfg["gpu_memory_utilization"] is None
        assert not any("memory-utilization" in a for a in vs.render_server_args(cfg))

    def test_normalize_is_idempotent(self):
        for raw in ALL_CONFIGS:
            once = vs.normalize_server_config(raw)
            assert vs.normalize_server_config(once) == once

    def test_defaults_are_not_shared_between_results(self):
        first = vs.normalize_server_config({"model": "/m"})
        first["extra_args"].append("--x")
        first["lora_modules"]["a"] = "/a"
        second = vs.normalize_server_config({"model": "/m"})
        assert second["extra_args"] == []
        assert second["lora_modules"] == {}

    def test_input_is_not_modified(self):
        raw = dict(LORA, lora_modules=dict(LORA["lora_modules"]))
        before = repr(raw)
        vs.render_server_args(raw)
        assert repr(raw) == before

    def test_inventory_strings_are_accepted(self):
        cfg = vs.normalize_server_config({"model": "/m", "port": "8001", "enforce_eager": "yes", "max_lora_rank": None})
        assert cfg["port"] == 8001
        assert cfg["enforce_eager"] is True


class TestRendering:
    def test_full_argv_order_and_values(self):
        assert vs.render_server_args(LORA) == [
            "--model", "/models/base",
            "--served-model-name", "base", "assistant",
            "--host", "0.0.0.0", "--port", "8000", "--dtype", "auto", "--max-model-len", "8192",
            "--tensor-parallel-size", "2", "--pipeline-parallel-size", "1", "--gpu-memory-utilization", "0.85",
            "--trust-remote-code",
            "--enable-lora", "--lora-modules", "chat=/adapters/chat v2", "sql=/adapters/sql",
            "--max-loras", "2", "--max-lora-rank", "32",
            "--no-enable-prefix-caching",
            "--disable-log-requests", "--swap-space", "4",
        ]  # fmt: skip

    def test_every_word_is_a_string(self):
        for cfg in ALL_CONFIGS:
            assert all(isinstance(word, str) for word in vs.render_server_args(cfg))

    def test_order_does_not_depend_on_key_order(self):
        for cfg in ALL_CONFIGS:
            reversed_cfg = dict(reversed(list(cfg.items())))
            assert vs.render_server_args(reversed_cfg) == vs.render_server_args(cfg)

    def test_lora_modules_sorted_by_name(self):
        a = dict(LORA, lora_modules={"b": "/b", "a": "/a"})
        assert "--lora-modules a=/a b=/b" in " ".join(vs.render_server_args(a))

    @pytest.mark.parametrize(
        ("value", "expected"),
        [(True, ["--enable-prefix-caching"]), (False, ["--no-enable-prefix-caching"]), (None, [])],
    )
    def test_prefix_caching_tristate(self, value, expected):
        argv = vs.render_server_args({"model": "/m", "enable_prefix_caching": value})
        assert [a for a in argv if "prefix-caching" in a] == expected

    def test_false_switches_render_nothing(self):
        argv = vs.render_server_args({"model": "/m", "enforce_eager": False, "trust_remote_code": False})
        assert "--enforce-eager" not in argv
        assert not any(a.startswith("--no-") for a in argv)

    def test_kv_cache_size_kept_as_written(self):
        argv = vs.render_server_args(CPU_TINY)
        assert argv[argv.index("--kv-cache-memory-bytes") + 1] == "64M"

    def test_parse_server_args_inverts_render(self):
        for cfg in ALL_CONFIGS:
            assert vs.parse_server_args(vs.render_server_args(cfg)) == vs.normalize_server_config(cfg)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [("64M", 64 * 2**20), ("64m", 64 * 10**6), ("1K", 1024), ("25.6k", 25600), ("4096", 4096), (512, 512)],
    )
    def test_size_to_bytes(self, text, expected):
        assert vs.size_to_bytes(text) == expected


class TestValidation:
    @pytest.mark.parametrize(
        ("cfg", "field", "fragment"),
        [
            ({}, "model", "is required"),
            ({"model": ""}, "model", "non-empty string"),
            ({"model": "--model"}, "model", "must not start with '-'"),
            ({"model": "/m", "port": 70000}, "port", "must be an integer between 1 and 65535, got 70000"),
            ({"model": "/m", "port": 0}, "port", "between 1 and 65535"),
            ({"model": "/m", "port": True}, "port", "must be an integer"),
            ({"model": "/m", "port": "80a"}, "port", "must be an integer"),
            ({"model": "/m", "dtype": "fp8"}, "dtype", "must be one of auto, half, float16, bfloat16, float, float32"),
            ({"model": "/m", "max_model_len": 0}, "max_model_len", "an integer >= 1"),
            ({"model": "/m", "tensor_parallel_size": 0}, "tensor_parallel_size", "an integer >= 1"),
            ({"model": "/m", "pipeline_parallel_size": -1}, "pipeline_parallel_size", "an integer >= 1"),
            (
                {"model": "/m", "gpu_memory_utilization": 0},
                "gpu_memory_utilization",
                "greater than 0.0 and at most 1.0",
            ),
            ({"model": "/m", "gpu_memory_utilization": 1.5}, "gpu_memory_utilization", "at most 1.0"),
            ({"model": "/m", "gpu_memory_utilization": "lots"}, "gpu_memory_utilization", "must be a number"),
            ({"model": "/m", "gpu_memory_utilization": float("nan")}, "gpu_memory_utilization", "must be a number"),
            ({"model": "/m", "device": "cpu", "gpu_memory_utilization": 0.5}, "gpu_memory_utilization", "cpu device"),
            ({"model": "/m", "max_num_seqs": 0}, "max_num_seqs", "an integer >= 1"),
            ({"model": "/m", "enforce_eager": "maybe"}, "enforce_eager", "must be a boolean"),
            ({"model": "/m", "kv_cache_memory_bytes": "lots"}, "kv_cache_memory_bytes", "size such as 64M"),
            ({"model": "/m", "kv_cache_memory_bytes": "1.5G"}, "kv_cache_memory_bytes", "decimals are not allowed"),
            ({"model": "/m", "kv_cache_memory_bytes": 0}, "kv_cache_memory_bytes", "positive"),
            ({"model": "/m", "served_model_name": []}, "served_model_name", "at least one"),
            ({"model": "/m", "served_model_name": ["a", "a"]}, "served_model_name", "must not repeat"),
            ({"model": "/m", "served_model_name": ["a", 3]}, "served_model_name[1]", "non-empty string"),
            ({"model": "/m", "lora_modules": {"a": "/a"}}, "lora_modules", "requires enable_lora: true"),
            ({"model": "/m", "max_loras": 2}, "max_loras", "requires enable_lora: true"),
            ({"model": "/m", "enable_lora": True, "lora_modules": ["a=/a"]}, "lora_modules", "mapping"),
            ({"model": "/m", "enable_lora": True, "lora_modules": {"a=b": "/a"}}, "lora_modules.a=b", "no '='"),
            ({"model": "/m", "enable_lora": True, "lora_modules": {"a": ""}}, "lora_modules.a", "non-empty"),
            ({"model": "/m", "enable_lora": True, "max_lora_rank": 12}, "max_lora_rank", "must be one of 1, 8, 16"),
            ({"model": "/m", "device": "tpu"}, "device", "must be one of cuda, cpu"),
            ({"model": "/m", "extra_args": "--x"}, "extra_args", "list of strings"),
            ({"model": "/m", "extra_args": [{"a": 1}]}, "extra_args[0]", "must be a string"),
            ({"model": "/m", "max_model_len": 1024, "modle": "/x"}, "modle", "unknown key"),
            ({"model": "/m", "api_key": "secret"}, "api_key", "VLLM_API_KEY"),
        ],
    )
    def test_error_names_the_field(self, cfg, field, fragment):
        error = error_of(cfg, "vllm_host_instances[1]")
        assert error.field == "vllm_host_instances[1]." + field
        assert str(error).startswith("vllm_host_instances[1]." + field + ": ")
        assert fragment in str(error)

    def test_exact_message_from_the_design(self):
        assert str(error_of({"model": "/m", "port": 70000}, "vllm_host_instances[1]")) == (
            "vllm_host_instances[1].port: must be an integer between 1 and 65535, got 70000"
        )

    def test_without_prefix_the_field_is_bare(self):
        assert str(error_of({"model": "/m", "port": 70000})).startswith("port: ")

    def test_not_a_mapping(self):
        assert "must be a mapping" in str(error_of(["--model", "/m"], "vllm"))

    @pytest.mark.parametrize(
        ("word", "owner"),
        [
            ("--max-model-len", "max_model_len"),
            ("--max_model_len=4096", "max_model_len"),
            ("--served-model-name", "served_model_name"),
            ("-tp", "tensor_parallel_size"),
            ("--device-memory-utilization", "gpu_memory_utilization"),
            ("--no-enable-prefix-caching", "enable_prefix_caching"),
            ("--no-enforce-eager", "enforce_eager"),
            ("--model=/other", "model"),
            ("--lora-modules", "lora_modules"),
        ],
    )
    def test_extra_args_cannot_repeat_a_field_flag(self, word, owner):
        error = error_of({"model": "/m", "extra_args": ["--disable-log-requests", word]}, "vllm")
        assert error.field == "vllm.extra_args[1]"
        assert f"set {owner} instead" in str(error)

    @pytest.mark.parametrize("word", ["--api-key", "--api_key=abc", "--api-key=abc"])
    def test_extra_args_refuse_api_key(self, word):
        error = error_of({"model": "/m", "extra_args": [word, "abc"]})
        assert error.field == "extra_args[0]"
        assert "VLLM_API_KEY" in str(error)

    def test_extra_args_keep_unknown_flags_and_numbers(self):
        cfg = vs.normalize_server_config({"model": "/m", "extra_args": ["--swap-space", 4, "--seed=1"]})
        assert cfg["extra_args"] == ["--swap-space", "4", "--seed=1"]


# Secret flags: every spelling vLLM's parser reads as them (tests/integration checks these against it).
SECRET_SPELLINGS = [
    ("--api-key", "--api-key", "VLLM_API_KEY"),
    ("--api_key", "--api-key", "VLLM_API_KEY"),
    ("--api-key=s3cr3t", "--api-key", "VLLM_API_KEY"),
    ("--api_key=s3cr3t", "--api-key", "VLLM_API_KEY"),
    ("--api-ke", "--api-key", "VLLM_API_KEY"),
    ("--api-k", "--api-key", "VLLM_API_KEY"),
    ("--api-ke=s3cr3t", "--api-key", "VLLM_API_KEY"),
    ("--api_k=s3cr3t", "--api-key", "VLLM_API_KEY"),
    ("--api-key.field", "--api-key", "VLLM_API_KEY"),  # vLLM's JSON dot syntax: --api-key '{"field": ...}'
    ("--api_k.field=s3cr3t", "--api-key", "VLLM_API_KEY"),
    ("--api-", "--api-key", "VLLM_API_KEY"),  # ambiguous for argparse (--api-server-count): refused anyway
    ("--ap", "--api-key", "VLLM_API_KEY"),
    ("--hf-token", "--hf-token", "HF_TOKEN"),
    ("--hf_token", "--hf-token", "HF_TOKEN"),
    ("--hf-token=hf_s3cr3t", "--hf-token", "HF_TOKEN"),
    ("--hf_token=hf_s3cr3t", "--hf-token", "HF_TOKEN"),
    ("--hf-tok", "--hf-token", "HF_TOKEN"),
    ("--hf-t", "--hf-token", "HF_TOKEN"),
    ("--hf_tok=hf_s3cr3t", "--hf-token", "HF_TOKEN"),
    ("--hf-token.x+=hf_s3cr3t", "--hf-token", "HF_TOKEN"),
    ("--hf", "--hf-token", "HF_TOKEN"),
]


class TestSecretFlags:
    def test_forbidden_flags(self):
        assert sorted(vs.FORBIDDEN_FLAGS) == ["--api-key", "--hf-token"]
        assert not set(vs.FORBIDDEN_FLAGS) & set(vs.REVIEWED_NOT_SECRET_FLAGS)
        assert not set(vs.FORBIDDEN_FLAGS) & set(vs.OWNED_FLAGS)

    @pytest.mark.parametrize(("word", "flag", "hint"), SECRET_SPELLINGS)
    def test_every_spelling_is_refused(self, word, flag, hint):
        assert vs.forbidden_flag_for(word) == flag
        error = error_of({"model": "/m", "extra_args": ["--seed", "1", word, "s3cr3t"]}, "vllm_host_instances[0]")
        assert error.field == "vllm_host_instances[0].extra_args[2]"
        assert str(error).startswith(f"vllm_host_instances[0].extra_args[2]: {flag} is not allowed")
        assert "secrets never go in argv" in str(error)
        assert hint in str(error)
        assert "s3cr3t" not in str(error)

    def test_abbreviation_is_named(self):
        assert "(--api-k abbreviates it)" in str(error_of({"model": "/m", "extra_args": ["--api_k=x"]}))
        assert "abbreviates" not in str(error_of({"model": "/m", "extra_args": ["--api_key=x"]}))

    @pytest.mark.parametrize(
        "word",
        [
            # real vLLM flags next to the secret ones, and words that merely contain them
            "--api-server-count",
            "--api-server-count=2",
            "--hf-overrides",
            "--hf-config-path=/cfg",
            "--tokenizer",
            "--tokenizer=/models/tok",
            "--tokenizer-mode",
            "--tokenizer-revision=main",
            "--ssl-keyfile=/etc/vllm/tls.key",
            "--ssl-certfile",
            "--allow-credentials",
            "--max-num-batched-tokens=2048",
            "--return-tokens-as-token-ids",
            # longer than the secret flag, or too short to abbreviate only it
            "--api-keys",
            "--hf-tokens",
            "--api-key-file",
            "--a",
            "--h",
            "--",
            # not options: values, single-dash words (vLLM has no short form of a secret flag)
            "api-key",
            "-api-key",
            "-h",
            "hf_token",
        ],
    )
    def test_other_words_are_not_secret_flags(self, word):
        assert vs.forbidden_flag_for(word) is None

    @pytest.mark.parametrize(
        "words",
        [
            ["--api-server-count", "2", "--hf-overrides", '{"rope_theta": 1000000}'],
            ["--tokenizer", "/models/tok", "--tokenizer-mode", "auto", "--tokenizer-revision", "main"],
            ["--ssl-keyfile", "/etc/vllm/tls.key", "--ssl-certfile", "/etc/vllm/tls.crt", "--allow-credentials"],
            ["--otlp-traces-endpoint", "https://collector.example:4317/v1/traces"],
            ["--allowed-origins", '["https://ui.example"]'],
            ["--kv-transfer-config", '{"url": "http://host:80/p@th", "x": "a@b"}'],
            ["--root-path=/api?x=a@b", "--chat-template", "/t/user@host.jinja"],
            ["--model-loader-extra-config", '{"a":"http://x","b":"y@z"}'],
        ],
    )
    def test_non_secret_flags_are_allowed(self, words):
        assert vs.normalize_server_config({"model": "/m", "extra_args": words})["extra_args"] == words

    @pytest.mark.parametrize(
        "word",
        [
            "https://user:p4ss@example.com/collector",
            "--otlp-traces-endpoint=https://user:p4ss@example.com:4317",
            "grpc://:p4ss@collector:4317",
            "https://ghp_p4ss@github.com/org/repo",
            "redis://default:p4ss@cache:6379/0",
            "s3+https://AKIA:p4ss@bucket/x",
            '{"url": "https://user:p4ss@host/x"}',
            '{"url": "https:\\/\\/user:p4ss@host\\/x"}',  # JSON may escape "/" as "\/"
            "HTTPS://user:p4ss@HOST",
        ],
    )
    def test_url_credentials_are_refused(self, word):
        assert vs.has_url_credentials(word)
        error = error_of({"model": "/m", "extra_args": ["--otlp-traces-endpoint", word]}, "vllm")
        assert error.field == "vllm.extra_args[1]"
        assert "URL with credentials" in str(error)
        assert "p4ss" not in str(error)

    @pytest.mark.parametrize(
        "word",
        ["https://example.com/a@b", "https://example.com?x=a@b", "https://example.com#a@b", "user@host", "a@b://c"],
    )
    def test_at_signs_outside_the_user_info_are_fine(self, word):
        assert not vs.has_url_credentials(word)


def systemd_split(line):
    """Reference reading of an ExecStart= tail by systemd's rules (systemd.service(5), "Command lines").

    Words are split on whitespace; double-quoted words are C-unescaped; then specifiers (``%%`` is
    ``%``) and environment variables (``$$`` is ``$``) are expanded.
    """
    words, i = [], 0
    while i < len(line):
        if line[i].isspace():
            i += 1
            continue
        assert line[i] == '"', f"unquoted word at {i}: {line[i:]!r}"
        i += 1
        out = []
        while line[i] != '"':
            char = line[i]
            if char == "\\":
                nxt = line[i + 1]
                if nxt == "x":
                    out.append(chr(int(line[i + 2 : i + 4], 16)))
                    i += 4
                    continue
                out.append({"\\": "\\", '"': '"', "n": "\n", "t": "\t"}[nxt])
                i += 2
                continue
            out.append(char)
            i += 1
        i += 1
        word = "".join(out)
        assert "%" not in word.replace("%%", ""), f"unescaped specifier in {word!r}"
        assert "$" not in word.replace("$$", ""), f"unescaped variable in {word!r}"
        words.append(word.replace("%%", "%").replace("$$", "$"))
    return words


AWKWARD = [
    "plain",
    "two words",
    'a "quoted" word',
    "back\\slash",
    "trailing\\",
    "100%",
    "%n%i",
    "$HOME",
    "${FOO}",
    "$$",
    ";",
    "it's",
    "tab\there",
    "new\nline",
    "ünïcödé",
    "",
]


class TestSystemdQuoting:
    def test_each_word_is_double_quoted(self):
        assert vs.systemd_exec_args(["--port", "8000"]) == '"--port" "8000"'

    def test_specifiers_and_variables_are_doubled(self):
        assert vs.systemd_exec_args(["50%", "$HOME", "${X}"]) == '"50%%" "$$HOME" "$${X}"'

    def test_quotes_and_backslashes_are_escaped(self):
        assert vs.systemd_exec_args(['a"b', "c\\d"]) == r'"a\"b" "c\\d"'

    def test_control_characters_are_hex_escaped(self):
        assert vs.systemd_exec_args(["a\nb", "c\td"]) == r'"a\x0ab" "c\x09d"'

    def test_round_trip_through_systemd_rules(self):
        assert systemd_split(vs.systemd_exec_args(AWKWARD)) == AWKWARD

    def test_rendered_config_round_trips(self):
        for cfg in ALL_CONFIGS:
            argv = vs.render_server_args(cfg)
            assert systemd_split(vs.systemd_exec_args(argv)) == argv

    def test_numbers_become_text(self):
        assert vs.systemd_exec_args([8000, 0.9]) == '"8000" "0.9"'

    def test_nul_is_refused(self):
        with pytest.raises(ValueError, match="NUL"):
            vs.systemd_exec_args(["a\x00b"])

    @pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
    def test_real_systemd_accepts_the_line(self, tmp_path):
        """systemd-analyze verify parses the unit with systemd's own code and fails on bad quoting or specifiers."""
        line = vs.systemd_exec_args(AWKWARD[:-1] + vs.render_server_args(LORA))
        unit = tmp_path / "llmops-quoting-test.service"
        unit.write_text(f"[Service]\nType=simple\nExecStart=/bin/true {line}\n")
        done = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert "ignoring" not in done.stderr.lower(), done.stderr

    @pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
    def test_real_systemd_rejects_an_unescaped_specifier(self, tmp_path):
        """The check above can fail: the same unit without escaping is refused."""
        unit = tmp_path / "llmops-quoting-test.service"
        unit.write_text('[Service]\nType=simple\nExecStart=/bin/true "%Z"\n')
        done = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
        )
        assert done.returncode != 0


def effective(argv):
    """The settings an argv gives vLLM, as a config read back by the model's own inverse parser."""
    return vs.parse_server_args(argv)


class TestHelm:
    def spec(self, cfg, **kwargs):
        return vs.render_helm_model_spec(cfg, "tiny", "vllm/vllm-openai", "v0.32.0", **kwargs)

    def test_chart_keys(self):
        spec = self.spec(LORA, request_cpu=8, request_memory="32Gi", pvc_storage="50Gi")
        assert spec["modelURL"] == "/models/base"
        assert spec["repository"] == "vllm/vllm-openai"
        assert spec["tag"] == "v0.32.0"
        assert spec["replicaCount"] == 1
        assert spec["requestGPU"] == 2
        assert spec["requestCPU"] == 8
        assert spec["requestMemory"] == "32Gi"
        assert spec["pvcStorage"] == "50Gi"
        assert spec["enableLoRA"] is True
        config = spec["vllmConfig"]
        assert config["maxModelLen"] == 8192
        assert config["dtype"] == "auto"
        assert config["tensorParallelSize"] == 2
        assert config["gpuMemoryUtilization"] == 0.85
        assert config["maxLoras"] == 2
        assert config["enablePrefixCaching"] is False
        assert config["extraArgs"] == [
            "--served-model-name", "base", "assistant", "--pipeline-parallel-size", "1", "--trust-remote-code",
            "--lora-modules", "chat=/adapters/chat v2", "sql=/adapters/sql", "--max-lora-rank", "32",
            "--disable-log-requests", "--swap-space", "4",
        ]  # fmt: skip

    def test_cpu_requests_no_gpu_and_no_memory_fraction(self):
        spec = self.spec(CPU_TINY)
        assert spec["requestGPU"] == 0
        assert "gpuMemoryUtilization" not in spec["vllmConfig"]

    @pytest.mark.parametrize("cfg", ALL_CONFIGS, ids=["tiny", "cpu", "lora"])
    def test_three_renderings_agree(self, cfg):
        """systemd ExecStart, Kubernetes container args and Helm values start vLLM with the same settings."""
        expected = vs.normalize_server_config(cfg)
        if expected["enable_prefix_caching"] is None:
            # The chart cannot leave prefix caching to vLLM; the spec pins vLLM's generative default.
            expected["enable_prefix_caching"] = vs.HELM_PREFIX_CACHING_WHEN_UNSET
        argv = vs.render_server_args(cfg)
        systemd = systemd_split(vs.systemd_exec_args(argv))
        k8s_args = list(argv)
        helm = vs.effective_args_from_helm_model_spec(self.spec(cfg))

        from_helm = effective(helm)
        assert from_helm == expected
        unpinned = dict(expected, enable_prefix_caching=vs.normalize_server_config(cfg)["enable_prefix_caching"])
        assert effective(systemd) == unpinned
        assert effective(k8s_args) == unpinned
        # Flag by flag, apart from spelling and order, the same words.
        helm_words = sorted(vs._flag_key(w) if w.startswith("--") else w for w in ["--model", *helm])
        argv_words = sorted(vs._flag_key(w) if w.startswith("--") else w for w in argv)
        if cfg.get("enable_prefix_caching") is None:
            helm_words.remove("--enable-prefix-caching")
        assert helm_words == argv_words

    def test_a_flag_added_once_appears_in_every_layout(self):
        cfg = dict(TINY, max_num_seqs=7, extra_args=["--seed", "3"])
        argv = vs.render_server_args(cfg)
        helm = vs.effective_args_from_helm_model_spec(self.spec(cfg))
        for words in (argv, systemd_split(vs.systemd_exec_args(argv)), helm):
            assert words[words.index("--max-num-seqs") + 1] == "7"
            assert words[words.index("--seed") + 1] == "3"

    def test_chart_template_replay(self):
        spec = {
            "modelURL": "m",
            "enableLoRA": True,
            "vllmConfig": {"enableChunkedPrefill": False, "maxModelLen": 4096, "gpuMemoryUtilization": 0.95},
            "chatTemplate": "t.jinja",
        }
        assert vs.effective_args_from_helm_model_spec(spec, container_port=9000) == [
            "m", "--host", "0.0.0.0", "--port", "9000", "--enable-lora", "--no-enable-chunked-prefill",
            "--no-enable-prefix-caching", "--max-model-len", "4096", "--gpu_memory_utilization", "0.95",
            "--chat-template", "/templates/t.jinja",
        ]  # fmt: skip

    @pytest.mark.parametrize(
        ("value", "printed"),
        [(16384, "16384"), (999999, "999999"), (1000000, "1e+06"), (1048576, "1.048576e+06"), (0.9, "0.9"), (1.0, "1")],
    )
    def test_go_number_formatting(self, value, printed):
        assert vs._go_value(value) == printed

    def test_large_integers_bypass_the_chart_float_formatting(self):
        spec = self.spec(dict(TINY, max_model_len=1048576))
        assert "maxModelLen" not in spec["vllmConfig"]
        helm = vs.effective_args_from_helm_model_spec(spec)
        assert helm[helm.index("--max-model-len") + 1] == "1048576"
        # What the chart would have printed had it been a chart key:
        raw = vs.effective_args_from_helm_model_spec({"modelURL": "m", "vllmConfig": {"maxModelLen": 1048576}})
        assert raw[raw.index("--max-model-len") + 1] == "1.048576e+06"

    def test_host_and_port_must_match_the_chart(self):
        with pytest.raises(vs.VllmConfigError, match=r"^vllm\.host: .*0\.0\.0\.0"):
            vs.render_helm_model_spec(dict(TINY, host="127.0.0.1"), "tiny", "r", "t", path="vllm")
        with pytest.raises(vs.VllmConfigError, match=r"^port: .*containerPort \(8000\), got 8001"):
            self.spec(dict(TINY, port=8001))
        assert self.spec(dict(TINY, port=9000), container_port=9000)["modelURL"] == "/models/tiny"

    @pytest.mark.parametrize("name", ["Tiny", "tiny_model", "-tiny", ""])
    def test_name_must_be_a_dns_label(self, name):
        with pytest.raises(vs.VllmConfigError, match=r"^name: must be a DNS label"):
            vs.render_helm_model_spec(TINY, name, "r", "t")

    def test_extra_keys_merge_but_cannot_carry_flags(self):
        spec = self.spec(TINY, extra={"env": [{"name": "A", "value": "1"}]})
        assert spec["env"] == [{"name": "A", "value": "1"}]
        with pytest.raises(vs.VllmConfigError, match=r"^extra\.vllmConfig: "):
            self.spec(TINY, extra={"vllmConfig": {}})
        with pytest.raises(vs.VllmConfigError, match=r"^extra\.modelURL: "):
            self.spec(TINY, extra={"modelURL": "/other"})
