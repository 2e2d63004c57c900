"""The rollout filters as Ansible calls them: FilterModule().filters()["rollout_batch"].

The planning itself is tested in tests/unit/plugins/module_utils/test_rollout.py; here: the answer when
hostvars does not exist yet (--syntax-check, --list-hosts), and ValueError turned into AnsibleFilterError.
"""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

from ansible_collections.llmops.platform.plugins.filter.rollout import FilterModule

VAR = "llmops_rollout_batch"


@pytest.fixture
def rollout_batch():
    return FilterModule().filters()["rollout_batch"]


@pytest.fixture
def warnings(monkeypatch):
    shown = []

    def warning(self, msg, *args, **kwargs):
        shown.append(msg)

    monkeypatch.setattr(Display, "warning", warning)
    return shown


def test_filters_are_registered():
    assert set(FilterModule().filters()) >= {"rollout_batch", "fanout_plan", "copy_chunks", "copy_progress"}


@pytest.mark.parametrize("hostvars", [{}, None])
def test_without_hostvars_one_host_at_a_time_with_a_warning(rollout_batch, warnings, hostvars):
    assert rollout_batch(["gpu1", "gpu2"], hostvars) == 1
    [message] = warnings
    assert "rollout_batch: hostvars is empty" in message
    assert VAR in message
    assert "batches of one host" in message


def test_the_warning_names_the_variable_asked_for(rollout_batch, warnings):
    assert rollout_batch(["gpu1"], {}, "my_serial", 4) == 1
    assert len(warnings) == 1
    assert "my_serial cannot be read" in warnings[0]


def test_no_hosts_and_no_hostvars_is_the_default_without_a_warning(rollout_batch, warnings):
    assert rollout_batch([], {}) == "100%"
    assert rollout_batch([], {}, VAR, 2) == 2
    assert warnings == []


@pytest.mark.parametrize(
    ("hostvars", "expected"),
    [
        ({"gpu1": {VAR: 2}, "gpu2": {VAR: 2}}, 2),
        ({"gpu1": {VAR: "2"}, "gpu2": {VAR: 2}}, 2),
        ({"gpu1": {VAR: "50%"}, "gpu2": {VAR: "050%"}}, "50%"),
        ({"gpu1": {VAR: [1, "25%"]}, "gpu2": {VAR: [1, "25%"]}}, [1, "25%"]),
        ({"gpu1": {}, "gpu2": {VAR: None}}, "100%"),
        ({"gpu1": {VAR: 3}, "gpu2": {VAR: 3}, "other": {VAR: 1}}, 3),  # only the hosts asked about count
    ],
)
def test_hostvars_give_the_inventory_value(rollout_batch, warnings, hostvars, expected):
    assert rollout_batch(["gpu1", "gpu2"], hostvars) == expected
    assert warnings == []


def test_a_custom_variable_and_default(rollout_batch, warnings):
    hostvars = {"gpu1": {"my_serial": 5}, "gpu2": {"my_serial": "5"}, "gpu3": {VAR: 1}}
    assert rollout_batch(["gpu1", "gpu2"], hostvars, "my_serial") == 5
    assert rollout_batch(["gpu3"], hostvars, "my_serial", "20%") == "20%"
    assert warnings == []


def test_disagreeing_hosts_are_an_error_naming_the_variable(rollout_batch, warnings):
    hostvars = {"gpu1": {VAR: 1}, "gpu2": {VAR: 2}, "gpu3": {}}
    with pytest.raises(AnsibleFilterError) as error:
        rollout_batch(["gpu1", "gpu2", "gpu3"], hostvars)
    message = str(error.value)
    assert f"{VAR} differs between hosts" in message
    assert "1 on gpu1" in message
    assert "2 on gpu2" in message
    assert "100% (unset, the default) on gpu3" in message
    assert isinstance(error.value.__cause__, ValueError)
    assert warnings == []


def test_a_custom_variable_is_named_in_the_error(rollout_batch):
    with pytest.raises(AnsibleFilterError, match="my_serial differs between hosts"):
        rollout_batch(["gpu1", "gpu2"], {"gpu1": {"my_serial": 1}, "gpu2": {"my_serial": "50%"}}, "my_serial")


@pytest.mark.parametrize(
    ("hosts", "hostvars", "match"),
    [
        (["gpu1"], {"gpu1": {VAR: 0}}, f"{VAR} must be a positive integer"),
        (["gpu1"], {"gpu1": {VAR: "latest"}}, f'{VAR} must be .*"latest" on gpu1'),
        (["gpu1", "gpu9"], {"gpu1": {VAR: 1}}, f"cannot read {VAR}: gpu9 not in hostvars"),
        ("gpu1", {"gpu1": {VAR: 1}}, "hosts must be a list of host names"),
    ],
)
def test_invalid_input_is_a_filter_error(rollout_batch, hosts, hostvars, match):
    with pytest.raises(AnsibleFilterError, match=match):
        rollout_batch(hosts, hostvars)


def test_an_invalid_default_is_a_filter_error(rollout_batch):
    with pytest.raises(AnsibleFilterError, match=f"the default of {VAR} must be"):
        rollout_batch(["gpu1"], {"gpu1": {}}, VAR, "0%")
