"""Rollout planning: batch size agreement, fan-out copy plans, copy chunks and progress text."""

import itertools
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.llmops.platform.plugins.module_utils import rollout as ro  # noqa: E402

VAR = "llmops_rollout_batch"
GIB = 1024**3


def exact_type(value):
    """The class itself, not a subclass: results must be plain str/int/list, not Ansible's tagged ones."""
    return value.__class__


class TaggedStr(str):
    """Stands in for Ansible's tagged str subclass."""


class TaggedInt(int):
    """Stands in for Ansible's tagged int subclass."""


class LazyHostVars(Mapping):
    """Like Ansible's HostVars: a mapping host -> a mapping of that host's variables, read on access."""

    def __init__(self, data):
        self._data = data
        self.reads = []

    def __getitem__(self, host):
        return LazyVars(self._data[host], self.reads, host)

    def __contains__(self, host):
        return host in self._data

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)


class LazyVars(Mapping):
    def __init__(self, data, reads, host):
        self._data, self._reads, self._host = data, reads, host

    def __getitem__(self, key):
        self._reads.append((self._host, key))
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)


def hv(**per_host):
    """hostvars where each keyword is a host; a value of ... means the host lacks the variable."""
    return {host: ({} if value is ... else {VAR: value}) for host, value in per_host.items()}


# -- rollout_batch ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1),
        (25, 25),
        ("2", 2),
        (" 3 ", 3),
        ("007", 7),
        ("1%", "1%"),
        ("50%", "50%"),
        ("100%", "100%"),
        ("050%", "50%"),
        ([1, "25%", "3"], [1, "25%", 3]),
        ((1, 2), [1, 2]),
        (TaggedStr("4"), 4),
        (TaggedStr("40%"), "40%"),
        (TaggedInt(5), 5),
    ],
)
def test_normalize_batch_valid(value, expected):
    result = ro.normalize_batch(value)
    assert result == expected
    assert exact_type(result) is exact_type(expected)
    if isinstance(result, list):
        assert [exact_type(x) for x in result] == [exact_type(x) for x in expected]


@pytest.mark.parametrize(
    "value",
    [0, -1, "0", "-2", "0%", "101%", "150%", "-5%", "%", "latest", "", "1.5", "2 hosts", True, False, 1.5, 2.0,
     [], [0], [1, "latest"], [[1]], {"a": 1}, None, b"2"],
)  # fmt: skip
def test_normalize_batch_invalid(value):
    assert ro.normalize_batch(value) is None


def test_rollout_batch_all_agree():
    assert ro.rollout_batch(["a", "b"], hv(a=2, b="2")) == 2
    assert ro.rollout_batch(["a", "b"], hv(a="25%", b="25%")) == "25%"
    assert ro.rollout_batch(["a", "b"], hv(a=[1, "50%"], b=["1", "50%"])) == [1, "50%"]


def test_rollout_batch_unset_hosts_count_as_default():
    assert ro.rollout_batch(["a", "b"], hv(a=..., b=...)) == "100%"
    assert ro.rollout_batch(["a", "b"], hv(a=..., b=None)) == "100%"
    assert ro.rollout_batch(["a", "b"], hv(a="100%", b=...)) == "100%"
    assert ro.rollout_batch(["a", "b"], hv(a=3, b=...), default="3") == 3
    assert ro.rollout_batch(["a"], hv(a=...), default=1) == 1


def test_rollout_batch_empty_hosts_returns_default():
    assert ro.rollout_batch([], {}) == "100%"
    assert ro.rollout_batch(None, {}) == "100%"
    assert ro.rollout_batch([], {}, default="2") == 2


def test_rollout_batch_other_variable():
    hostvars = {"a": {"vllm_batch": 4, VAR: 1}, "b": {"vllm_batch": "4"}}
    assert ro.rollout_batch(["a", "b"], hostvars, variable="vllm_batch") == 4


def test_rollout_batch_reads_lazy_hostvars_and_tagged_values():
    hostvars = LazyHostVars(hv(a=TaggedStr("2"), b=TaggedInt(2), c=..., other=5))
    result = ro.rollout_batch(["a", "b"], hostvars)
    assert result == 2
    assert exact_type(result) is int
    assert ("other", VAR) not in hostvars.reads  # only the hosts asked about are read


def test_rollout_batch_duplicate_hosts_are_fine():
    assert ro.rollout_batch(["a", "a", "b"], hv(a=2, b=2)) == 2


def test_rollout_batch_disagreement_names_values_and_hosts():
    with pytest.raises(ValueError) as exc:
        ro.rollout_batch(["a", "b", "c"], hv(a=1, b="1", c=2))
    assert str(exc.value) == (
        "llmops_rollout_batch differs between hosts: 1 on a, b; 2 on c \u2014 set it once for the group"
    )


def test_rollout_batch_disagreement_marks_the_default():
    with pytest.raises(ValueError, match=r"2 on a; 100% \(unset, the default\) on b, c"):
        ro.rollout_batch(["a", "b", "c"], hv(a=2, b=..., c=...))


def test_rollout_batch_disagreement_with_lists_and_percentages():
    with pytest.raises(ValueError, match=r'\[1, "50%"\] on a; 50% on b'):
        ro.rollout_batch(["a", "b"], hv(a=[1, "50%"], b="50%"))


def test_rollout_batch_long_host_lists_are_shortened():
    hosts = [f"gpu-{i:02d}" for i in range(30)]
    hostvars = {h: {VAR: 2} for h in hosts}
    hostvars["gpu-29"] = {VAR: 3}
    with pytest.raises(ValueError) as exc:
        ro.rollout_batch(hosts, hostvars)
    assert "gpu-00, gpu-01" in str(exc.value)
    assert "gpu-09 and 19 more; 3 on gpu-29" in str(exc.value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0, "0"), (-1, "-1"), ("0%", '"0%"'), ("150%", '"150%"'), ("latest", '"latest"'), (True, "true"),
     (1.5, "1.5"), ([], r"\[\]"), ([1, 0], r"\[1, 0\]")],
)  # fmt: skip
def test_rollout_batch_invalid_value_names_variable_value_and_host(value, shown):
    with pytest.raises(ValueError, match=rf"^llmops_rollout_batch must be .*; got {shown} on b$"):
        ro.rollout_batch(["a", "b"], hv(a=2, b=value))


def test_rollout_batch_invalid_values_grouped_by_value():
    with pytest.raises(ValueError, match=r'got 0 on a, c; "latest" on b$'):
        ro.rollout_batch(["a", "b", "c", "d"], hv(a=0, b="latest", c=0, d=2))


def test_rollout_batch_invalid_default():
    with pytest.raises(ValueError, match="the default of llmops_rollout_batch must be"):
        ro.rollout_batch([], {}, default="0%")


def test_rollout_batch_unknown_host():
    with pytest.raises(ValueError, match="cannot read llmops_rollout_batch: x, y not in hostvars"):
        ro.rollout_batch(["a", "x", "y"], hv(a=1))


@pytest.mark.parametrize("hostvars", [{}, None])
def test_rollout_batch_without_hostvars_explains_the_first_play(hostvars):
    with pytest.raises(ValueError, match="first play"):
        ro.rollout_batch(["a"], hostvars)


@pytest.mark.parametrize("hosts", ["a", {"a": 1}, 3, ["a", ""], ["a", None]])
def test_rollout_batch_hosts_must_be_a_list_of_names(hosts):
    with pytest.raises(ValueError, match="hosts must be a list of host names"):
        ro.rollout_batch(hosts, hv(a=1))


# -- fanout_plan -----------------------------------------------------------------------------------


def as_dicts(plan):
    return [{c["target"]: c["source"] for c in round_} for round_ in plan]


def check_plan(plan, targets, seeds, fanout, controller="controller"):
    """The invariants every plan must hold."""
    seeds = list(dict.fromkeys(seeds))
    wanted = [t for t in dict.fromkeys(targets) if t not in seeds]
    planned = [c["target"] for round_ in plan for c in round_]
    assert planned == wanted  # every target exactly once, in the order given
    holders = set(seeds)
    controller_copies = 0
    for number, round_ in enumerate(plan):
        assert round_, "no empty rounds"
        per_source = {}
        for copy in round_:
            assert set(copy) == {"target", "source"}
            source = copy["source"]
            if source == controller and controller not in holders:
                controller_copies += 1
                assert not seeds and number == 0 and len(round_) == 1
            else:
                assert source in holders, f"{source} does not hold the copy yet in round {number + 1}"
            per_source[source] = per_source.get(source, 0) + 1
        assert max(per_source.values()) <= fanout
        if max(per_source.values()) > 1:  # a source sends twice only once every holder sends
            assert set(per_source) == holders
        # evenly: sources used in a round differ by at most one copy
        assert max(per_source.values()) - min(per_source.values()) <= 1
        holders.update(c["target"] for c in round_)
    assert controller_copies == (1 if wanted and not seeds else 0)


def test_fanout_plan_from_the_controller():
    plan = ro.fanout_plan(["a", "b", "c", "d"], [])
    assert as_dicts(plan) == [{"a": "controller"}, {"b": "a"}, {"c": "a", "d": "b"}]
    assert plan[2] == [{"target": "c", "source": "a"}, {"target": "d", "source": "b"}]


def test_fanout_plan_from_seeds():
    assert as_dicts(ro.fanout_plan(["c", "d"], ["a", "b"])) == [{"c": "a", "d": "b"}]


def test_fanout_plan_fanout_two():
    plan = ro.fanout_plan(list("abcdefg"), [], fanout=2)
    assert as_dicts(plan) == [
        {"a": "controller"},
        {"b": "a", "c": "a"},
        {"d": "a", "e": "b", "f": "c", "g": "a"},
    ]
    check_plan(plan, list("abcdefg"), [], 2)


def test_fanout_plan_full_rounds_use_every_source_fanout_times():
    targets = [f"h{i:02d}" for i in range(1, 27)]
    plan = ro.fanout_plan(targets, ["seed"], fanout=2)
    # holders 1 -> 3 -> 9 -> 27: each round every holder sends exactly two copies
    assert [len(r) for r in plan] == [2, 6, 18]
    check_plan(plan, targets, ["seed"], 2)


def test_fanout_plan_custom_controller_name():
    assert as_dicts(ro.fanout_plan(["a", "b"], [], controller="localhost")) == [{"a": "localhost"}, {"b": "a"}]


def test_fanout_plan_drops_seeds_and_duplicates():
    plan = ro.fanout_plan(["a", "b", "a", "c", "b", "d"], ["b", "b"])
    assert as_dicts(plan) == [{"a": "b"}, {"c": "b", "d": "a"}]


def test_fanout_plan_nothing_to_do():
    assert ro.fanout_plan([], []) == []
    assert ro.fanout_plan(["a", "b"], ["b", "a"]) == []
    assert ro.fanout_plan(None, None) == []


def test_fanout_plan_single_target_without_seed():
    assert ro.fanout_plan(["a"], []) == [[{"target": "a", "source": "controller"}]]


def test_fanout_plan_is_deterministic():
    targets = [f"gpu-{i}" for i in range(40)]
    first = ro.fanout_plan(targets, ["s1", "s2"], fanout=3)
    assert all(ro.fanout_plan(list(targets), ["s1", "s2"], fanout=3) == first for _attempt in range(5))


@pytest.mark.parametrize(
    ("n_targets", "n_seeds", "fanout"),
    list(itertools.product([0, 1, 2, 3, 5, 8, 13, 64, 100], [0, 1, 2, 5], [1, 2, 3, 7])),
)
def test_fanout_plan_invariants(n_targets, n_seeds, fanout):
    seeds = [f"s{i}" for i in range(n_seeds)]
    # some targets already hold the copy, some are listed twice
    targets = [f"t{i}" for i in range(n_targets)] + seeds[:1] + [f"t{i}" for i in range(0, n_targets, 3)]
    plan = ro.fanout_plan(targets, seeds, fanout=fanout)
    check_plan(plan, targets, seeds, fanout)


def test_fanout_plan_rounds_grow_geometrically():
    plan = ro.fanout_plan([f"t{i}" for i in range(1000)], [], fanout=1)
    # 1 from the controller, then holders double: 1, 1, 2, 4, ... 512, rest
    assert len(plan) == 11
    assert [len(r) for r in plan[:10]] == [1, 1, 2, 4, 8, 16, 32, 64, 128, 256]


def test_fanout_plan_fanout_as_digit_string():
    assert ro.fanout_plan(["a", "b", "c"], ["s"], fanout="2") == ro.fanout_plan(["a", "b", "c"], ["s"], fanout=2)


@pytest.mark.parametrize("fanout", [0, -1, True, 1.5, "x", None, "0"])
def test_fanout_plan_invalid_fanout(fanout):
    with pytest.raises(ValueError, match="fanout must be a positive integer"):
        ro.fanout_plan(["a"], [], fanout=fanout)


@pytest.mark.parametrize(
    ("targets", "seeds", "what"), [("a", [], "targets"), (["a"], "b", "seeds"), ([1], [], "targets")]
)
def test_fanout_plan_invalid_host_lists(targets, seeds, what):
    with pytest.raises(ValueError, match=f"{what} must be a list of host names"):
        ro.fanout_plan(targets, seeds)


def test_fanout_plan_invalid_controller():
    with pytest.raises(ValueError, match="controller must be a non-empty name"):
        ro.fanout_plan(["a"], [], controller="")
    with pytest.raises(ValueError, match="cannot be a target"):
        ro.fanout_plan(["controller", "b"], [])


def test_fanout_plan_accepts_tagged_names():
    plan = ro.fanout_plan([TaggedStr("a"), "b"], [TaggedStr("s")])
    assert plan == [[{"target": "a", "source": "s"}], [{"target": "b", "source": "s"}]]
    assert all(exact_type(v) is str for r in plan for c in r for v in c.values())


# -- copy_chunks -----------------------------------------------------------------------------------


def manifest(*sizes):
    return [{"path": f"f{i:02d}", "size": s, "mtime_ns": 1, "sha256": "0" * 64} for i, s in enumerate(sizes)]


def test_copy_chunks_groups_by_size():
    chunks = ro.copy_chunks(manifest(3, 3, 3, 3, 3), 6)
    assert [(c["paths"], c["bytes"], c["done_before"]) for c in chunks] == [
        (["f00", "f01"], 6, 0),
        (["f02", "f03"], 6, 6),
        (["f04"], 3, 12),
    ]
    assert all(c["count"] == 3 and c["total"] == 15 for c in chunks)
    assert [c["index"] for c in chunks] == [1, 2, 3]


def test_copy_chunks_big_file_is_its_own_chunk():
    chunks = ro.copy_chunks(manifest(1, 1, 100, 1, 1), 10)
    assert [c["paths"] for c in chunks] == [["f00", "f01"], ["f02"], ["f03", "f04"]]
    assert [c["bytes"] for c in chunks] == [2, 100, 2]


def test_copy_chunks_closes_on_reaching_the_limit():
    assert [c["paths"] for c in ro.copy_chunks(manifest(4, 6, 5), 10)] == [["f00", "f01"], ["f02"]]
    # 4 + 7 would pass 10: the 7 starts the next chunk
    assert [c["paths"] for c in ro.copy_chunks(manifest(4, 7, 3), 10)] == [["f00"], ["f01", "f02"]]


def test_copy_chunks_only_single_files_exceed_the_limit():
    sizes = [7, 1, 30, 2, 2, 9, 11, 0, 0, 5, 5, 5, 12, 1]
    for limit in range(1, 40):
        chunks = ro.copy_chunks(manifest(*sizes), limit)
        paths = [p for c in chunks for p in c["paths"]]
        assert paths == sorted(f"f{i:02d}" for i in range(len(sizes)))  # every file once, in order
        for c in chunks:
            assert c["bytes"] <= limit or len(c["paths"]) == 1
        done = 0
        for c in chunks:
            assert c["done_before"] == done
            done += c["bytes"]
        assert done == sum(sizes)


@pytest.mark.parametrize("limit", [0, -1, "0"])
def test_copy_chunks_no_limit_gives_one_chunk(limit):
    chunks = ro.copy_chunks(manifest(5, 5, 5), limit)
    assert chunks == [
        {"index": 1, "count": 1, "paths": ["f00", "f01", "f02"], "bytes": 15, "done_before": 0, "total": 15}
    ]


def test_copy_chunks_sorts_by_path():
    files = [{"path": "z.safetensors", "size": 1}, {"path": "a/config.json", "size": 1}, {"path": "m", "size": 1}]
    assert ro.copy_chunks(files, 0)[0]["paths"] == ["a/config.json", "m", "z.safetensors"]


def test_copy_chunks_accepts_registered_result_cache_files_and_mappings():
    entries = manifest(2, 2)
    expected = ro.copy_chunks(entries, 2)
    assert ro.copy_chunks({"valid": True, "manifest": entries, "total_size": 4}, 2) == expected
    assert ro.copy_chunks({"format": "llmops.platform.model_manifest/1", "manifest": entries}, 2) == expected
    assert ro.copy_chunks({"files": entries}, 2) == expected
    assert ro.copy_chunks({"f01": 2, "f00": 2}, 2) == expected
    assert ro.copy_chunks({"f01": {"size": 2}, "f00": {"size": 2, "sha256": "x"}}, 2) == expected


def test_copy_chunks_empty_manifest():
    assert ro.copy_chunks([], 10) == []
    assert ro.copy_chunks({"manifest": []}, 10) == []
    assert ro.copy_chunks({}, 10) == []


def test_copy_chunks_zero_byte_files():
    chunks = ro.copy_chunks(manifest(0, 0, 0), 10)
    assert chunks == [
        {"index": 1, "count": 1, "paths": ["f00", "f01", "f02"], "bytes": 0, "done_before": 0, "total": 0}
    ]


def test_copy_chunks_tagged_values():
    files = [{"path": TaggedStr("a"), "size": TaggedInt(3)}]
    chunk = ro.copy_chunks(files, TaggedInt(3))[0]
    assert exact_type(chunk["paths"][0]) is str
    assert exact_type(chunk["bytes"]) is int


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ("model.safetensors", "files must be a manifest"),
        (None, "files must be a manifest"),
        ([{"path": "a"}], "manifest entry 0 must be a dict with path and size"),
        (["a"], "manifest entry 0 must be a dict"),
        ([{"path": "a", "size": -1}], r"manifest entry 0 \(a\): size must be a non-negative integer"),
        ([{"path": "a", "size": "12"}], "size must be a non-negative integer"),
        ([{"path": "a", "size": True}], "size must be a non-negative integer"),
        ([{"path": "", "size": 1}], "path must be a non-empty string"),
        ([{"path": "a", "size": 1}, {"path": "a", "size": 1}], "a is listed twice"),
        ({"a": "big"}, 'file "a" \\(a\\): size must be'),
    ],
)
def test_copy_chunks_invalid_manifest(files, message):
    with pytest.raises(ValueError, match=message):
        ro.copy_chunks(files, 10)


@pytest.mark.parametrize("limit", ["10G", 1.5, None, True])
def test_copy_chunks_invalid_chunk_bytes(limit):
    with pytest.raises(ValueError, match="chunk_bytes must be an integer"):
        ro.copy_chunks(manifest(1), limit)


# -- copy_progress ---------------------------------------------------------------------------------


def chunk(index=3, count=12, nbytes=0, done_before=0, total=0):
    return {"index": index, "count": count, "paths": ["x"], "bytes": nbytes, "done_before": done_before, "total": total}


def test_copy_progress_example():
    total = int(58.2 * GIB)
    done = int(14.6 * GIB)
    elapsed = done / 412e6
    text = ro.copy_progress(chunk(3, 12, GIB, done - GIB, total), 1000.0, 1000.0 + elapsed)
    assert text.startswith("chunk 3/12: 14.6 of 58.2 GiB (25%), 412 MB/s, about ")
    left = (total - done) / 412e6
    assert text.endswith(f"about {ro.format_duration(left)} left")
    assert text == "chunk 3/12: 14.6 of 58.2 GiB (25%), 412 MB/s, about 1 min 54 s left"


def test_copy_progress_last_chunk_says_done():
    text = ro.copy_progress(chunk(12, 12, 2 * GIB, 8 * GIB, 10 * GIB), 0, 100)
    assert text == "chunk 12/12: 10.0 of 10.0 GiB (100%), 107 MB/s, done in 1 min 40 s"


def test_copy_progress_uses_current_time_by_default(monkeypatch):
    monkeypatch.setattr(ro.time, "time", lambda: 1060.0)
    text = ro.copy_progress(chunk(1, 2, 600_000_000, 0, 1_200_000_000), 1000.0)
    assert text == "chunk 1/2: 0.6 of 1.1 GiB (50%), 10 MB/s, about 1 min left"


@pytest.mark.parametrize(("start", "now"), [(1000.0, 1000.0), (1000.0, 990.0)])
def test_copy_progress_without_elapsed_time_leaves_rate_out(start, now):
    assert ro.copy_progress(chunk(1, 4, GIB, 0, 4 * GIB), start, now) == "chunk 1/4: 1.0 of 4.0 GiB (25%)"


def test_copy_progress_nothing_copied_leaves_rate_out():
    assert ro.copy_progress(chunk(1, 2, 0, 0, 10), 0, 10) == "chunk 1/2: 0 of 10 B (0%)"


def test_copy_progress_empty_model():
    assert ro.copy_progress(chunk(1, 1, 0, 0, 0), 0, 10) == "chunk 1/1: 0 of 0 B (100%)"


def test_copy_progress_time_inputs():
    import datetime

    c = chunk(1, 2, 500, 0, 1000)
    expected = ro.copy_progress(c, 100.0, 110.0)
    assert ro.copy_progress(c, "100", "110.0") == expected
    assert ro.copy_progress(c, TaggedStr("100.0"), 110) == expected
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    assert ro.copy_progress(c, epoch + datetime.timedelta(seconds=100), 110) == expected


@pytest.mark.parametrize("started_at", ["soon", None, True, float("nan"), [1]])
def test_copy_progress_invalid_start(started_at):
    with pytest.raises(ValueError, match="started_at must be seconds since the epoch"):
        ro.copy_progress(chunk(1, 1, 1, 0, 1), started_at, 10)


@pytest.mark.parametrize(
    "bad", [{"bytes": -1}, {"total": "10"}, {"index": None}, {"done_before": 1.5}, {"count": True}]
)
def test_copy_progress_invalid_chunk(bad):
    c = chunk(1, 1, 1, 0, 1)
    c.update(bad)
    with pytest.raises(ValueError, match=f"chunk {next(iter(bad))} must be a non-negative integer"):
        ro.copy_progress(c, 0, 1)
    with pytest.raises(ValueError, match="chunk must be a dict"):
        ro.copy_progress(["x"], 0, 1)


def test_copy_progress_over_chunks_from_copy_chunks():
    chunks = ro.copy_chunks(manifest(*[GIB] * 4), GIB)
    texts = [ro.copy_progress(c, 0, 10 * c["index"]) for c in chunks]
    assert texts == [
        "chunk 1/4: 1.0 of 4.0 GiB (25%), 107 MB/s, about 30 s left",
        "chunk 2/4: 2.0 of 4.0 GiB (50%), 107 MB/s, about 20 s left",
        "chunk 3/4: 3.0 of 4.0 GiB (75%), 107 MB/s, about 10 s left",
        "chunk 4/4: 4.0 of 4.0 GiB (100%), 107 MB/s, done in 40 s",
    ]


@pytest.mark.parametrize(
    ("done", "total", "text"),
    [
        (0, 0, "0 of 0 B"),
        (512, 1023, "512 of 1023 B"),
        (512, 1024, "0.5 of 1.0 KiB"),
        (5 * 1024**2, 10 * 1024**2, "5.0 of 10.0 MiB"),
        (GIB, 1024 * GIB, "0.0 of 1.0 TiB"),
        (3 * 1024**5, 5 * 1024**5, "3072.0 of 5120.0 TiB"),
    ],
)
def test_format_size_pair(done, total, text):
    assert ro.format_size_pair(done, total) == text


@pytest.mark.parametrize(
    ("rate", "text"),
    [(412e6, "412 MB/s"), (10e6, "10 MB/s"), (3.44e6, "3.4 MB/s"), (1e6, "1.0 MB/s"), (5e4, "0.05 MB/s"),
     (5.2e9, "5200 MB/s")],
)  # fmt: skip
def test_format_rate(rate, text):
    assert ro.format_rate(rate) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (0.4, "0 s"), (46, "46 s"), (59.6, "1 min"), (60, "1 min"), (106, "1 min 46 s"),
     (3599, "59 min 59 s"), (3600, "1 h"), (7500, "2 h 5 min"), (90061, "25 h 1 min"), (-5, "0 s")],
)  # fmt: skip
def test_format_duration(seconds, text):
    assert ro.format_duration(seconds) == text


def test_copy_progress_at_least_one_second_left():
    text = ro.copy_progress(chunk(1, 2, 999_999, 0, 1_000_000), 0, 10)
    assert text.endswith("about 1 s left")


# -- the filter plugin -----------------------------------------------------------------------------


def test_filter_module_exposes_the_filters():
    from ansible_collections.llmops.platform.plugins.filter.rollout import FilterModule

    filters = FilterModule().filters()
    assert set(filters) == {"rollout_batch", "fanout_plan", "copy_chunks", "copy_progress"}
    assert filters["fanout_plan"](["a", "b"], []) == ro.fanout_plan(["a", "b"], [])
    assert filters["copy_chunks"](manifest(1, 2), 0) == ro.copy_chunks(manifest(1, 2), 0)
    assert filters["copy_progress"](chunk(1, 1, 1, 0, 1), 0, 0) == "chunk 1/1: 1 of 1 B (100%)"
    assert filters["rollout_batch"](["a"], hv(a="3")) == 3


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("rollout_batch", (["a", "b"], hv(a=1, b=2)), "llmops_rollout_batch differs between hosts"),
        ("fanout_plan", (["a"], [], 0), "fanout must be a positive integer"),
        ("copy_chunks", ("x", 1), "files must be a manifest"),
        ("copy_progress", ({}, 0), "chunk index must be"),
    ],
)
def test_filters_raise_ansible_filter_error(name, args, message):
    from ansible.errors import AnsibleFilterError

    from ansible_collections.llmops.platform.plugins.filter.rollout import FilterModule

    with pytest.raises(AnsibleFilterError, match=message):
        FilterModule().filters()[name](*args)


def test_rollout_batch_reads_real_hostvars(tmp_path):
    """Ansible's own HostVars over an inventory with group_vars, host_vars and extra vars."""
    from ansible.errors import AnsibleFilterError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.hostvars import HostVars
    from ansible.vars.manager import VariableManager

    from ansible_collections.llmops.platform.plugins.filter.rollout import rollout_batch

    def hostvars(name, host_vars=None, extra_vars=None):
        # a fresh directory each time: the host_group_vars plugin caches what it found per path
        inv = tmp_path / name
        (inv / "group_vars").mkdir(parents=True)
        (inv / "hosts.ini").write_text("[vllm_hosts]\ngpu-1\ngpu-2\ngpu-3\n[other]\ncpu-1\n")
        (inv / "group_vars" / "vllm_hosts.yml").write_text("llmops_rollout_batch: '2'\n")
        if host_vars:
            (inv / "host_vars").mkdir()
            for host, text in host_vars.items():
                (inv / "host_vars" / f"{host}.yml").write_text(text)
        loader = DataLoader()
        inventory = InventoryManager(loader=loader, sources=[str(inv / "hosts.ini")])
        manager = VariableManager(loader=loader, inventory=inventory)
        if extra_vars:
            # a new dict: manager.extra_vars may be the dict load_extra_vars caches for the whole process
            manager._extra_vars = {**manager.extra_vars, **extra_vars}
        return HostVars(inventory=inventory, variable_manager=manager, loader=loader)

    hosts = ["gpu-1", "gpu-2", "gpu-3"]
    assert rollout_batch(hosts, hostvars("group")) == 2
    assert rollout_batch(["cpu-1"], hostvars("unset")) == "100%"
    assert rollout_batch(hosts, hostvars("extra", extra_vars={"llmops_rollout_batch": [1, "50%"]})) == [1, "50%"]
    with pytest.raises(AnsibleFilterError, match="2 on gpu-1, gpu-2; 3 on gpu-3"):
        rollout_batch(hosts, hostvars("host", {"gpu-3": "llmops_rollout_batch: 3\n"}))
    with pytest.raises(AnsibleFilterError, match="nope not in hostvars"):
        rollout_batch(["nope"], hostvars("unknown"))
