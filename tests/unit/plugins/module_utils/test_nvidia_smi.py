"""The nvidia-smi parser on real output captured on an H100 80GB host (tests/unit/data/nvidia-smi)."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.llmops.platform.plugins.module_utils import nvidia_smi as smi  # noqa: E402

DATA = ROOT / "tests" / "unit" / "data" / "nvidia-smi"
UUID = "GPU-43cb350c-607f-01b0-31bb-e036fa896010"


def data(name):
    return (DATA / name).read_text()


class TestGpuQuery:
    def test_csv_with_header_and_units(self):
        (gpu,) = smi.parse_gpu_query(data("smi_query_gpu.csv"))
        assert gpu == {
            "index": 0,
            "uuid": UUID,
            "name": "NVIDIA H100 80GB HBM3",
            "memory_total_mib": 81559,
            "memory_used_mib": 0,
            "memory_free_mib": 81079,
            "driver_version": "580.159.04",
            "persistence_mode": True,
            "mig_mode": "Disabled",
            "compute_cap": "9.0",
            "pci_bus_id": "00000000:00:06.0",
            "utilization_gpu_pct": 0,
            "temperature_gpu_c": 36,
            "power_draw_w": 115.67,
        }

    def test_noheader_nounits_matches_the_header_form(self):
        fields = smi.GPU_QUERY_FIELDS[:11]  # the capture queried the fields up to pci.bus_id
        (plain,) = smi.parse_csv_query(data("smi_query_gpu_noheader_nounits.csv"), fields)
        (with_header,) = smi.parse_gpu_query(data("smi_query_gpu.csv"))
        assert plain == {key: with_header[key] for _name, key, _convert in fields}

    def test_busy_memory_columns_by_header(self):
        (gpu,) = smi.parse_gpu_query(data("smi_query_gpu_busy.csv"))
        assert (gpu["index"], gpu["memory_used_mib"], gpu["memory_free_mib"]) == (0, 2435, 78645)
        assert gpu["uuid"] is None  # not queried in that capture

    def test_module_query_is_the_captured_field_list(self):
        header = data("smi_query_gpu.csv").splitlines()[0]
        names = [column.split("[")[0].strip() for column in header.split(",")]
        command = smi.gpu_query_command("nvidia-smi")
        assert command[1] == "--query-gpu=" + ",".join(names)
        assert command[2] == "--format=csv,noheader,nounits"

    @pytest.mark.parametrize("na", ["[N/A]", "N/A", "[Not Supported]"])
    def test_not_available_values_are_none(self, na):
        line = f"1, GPU-x, NVIDIA A10, 23028, 0, 22563, 580.159.04, Disabled, {na}, 8.6, 0:1:0.0, {na}, {na}, {na}"
        (gpu,) = smi.parse_gpu_query(line)
        assert gpu["mig_mode"] is None
        assert gpu["utilization_gpu_pct"] is None
        assert gpu["temperature_gpu_c"] is None
        assert gpu["power_draw_w"] is None
        assert gpu["persistence_mode"] is False

    def test_several_gpus(self):
        line = data("smi_query_gpu_noheader_nounits.csv").strip() + ", 0, 36, 115.67"
        text = "\n".join([line, line.replace("0, GPU-", "1, GPU-1", 1)]) + "\n"
        assert [g["index"] for g in smi.parse_gpu_query(text)] == [0, 1]

    def test_wrong_column_count_quotes_the_line(self):
        bad = data("smi_query_gpu_noheader_nounits.csv").strip()  # 11 values, the module asks for 14
        with pytest.raises(smi.NvidiaSmiParseError, match="expected 14 comma-separated values, got 11") as info:
            smi.parse_gpu_query(bad)
        assert bad in str(info.value)

    def test_non_numeric_value_quotes_the_line(self):
        line = "zero, GPU-x, NVIDIA A10, 1, 0, 1, 5, Enabled, Disabled, 8.6, 0:1.0, 0, 30, 50.0"
        with pytest.raises(smi.NvidiaSmiParseError, match=r"cannot read index .*'zero'"):
            smi.parse_gpu_query(line)

    def test_error_text_instead_of_csv(self):
        text = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
        with pytest.raises(smi.NvidiaSmiParseError, match="NVIDIA-SMI has failed"):
            smi.parse_gpu_query(text)

    def test_unknown_header_column(self):
        with pytest.raises(smi.NvidiaSmiParseError, match=r"does not know .*clocks\.sm"):
            smi.parse_gpu_query("index, clocks.sm [MHz]\n0, 375 MHz\n")


class TestComputeApps:
    def test_busy_capture(self):
        assert smi.parse_compute_apps(data("smi_compute_apps_busy.csv")) == [
            {"gpu_uuid": UUID, "pid": 427, "process_name": "python3", "used_memory_mib": 2426}
        ]

    def test_module_form(self):
        rows = smi.parse_compute_apps(f"{UUID}, 427, python3, 2426\n{UUID}, 900, /opt/vllm/bin/python, 70000\n")
        assert [r["pid"] for r in rows] == [427, 900]
        assert rows[1]["used_memory_mib"] == 70000

    def test_no_processes(self):
        assert smi.parse_compute_apps("") == []
        assert smi.parse_compute_apps("No running processes found\n") == []

    def test_process_name_with_commas(self):
        (row,) = smi.parse_compute_apps(f"{UUID}, 12, /srv/a, b/python, 10\n")
        assert row["process_name"] == "/srv/a, b/python"
        assert row["used_memory_mib"] == 10

    def test_na_memory(self):
        (row,) = smi.parse_compute_apps(f"{UUID}, 12, python3, [N/A]\n")
        assert row["used_memory_mib"] is None


class TestDetails:
    def test_real_xml(self):
        details = smi.parse_details_xml(data("smi_q.xml"))
        assert details["driver_version"] == "580.159.04"
        assert details["cuda_version"] == "13.0"
        assert details["attached_gpus"] == 1
        (gpu,) = details["gpus"]
        assert gpu["uuid"] == UUID
        assert gpu["pci_bus_id"] == "00000000:00:06.0"
        assert gpu["architecture"] == "Hopper"
        assert gpu["compute_mode"] == "Default"
        assert gpu["mig_mode"] == "Disabled"
        assert gpu["fabric_state"] is None  # N/A: no NVSwitch on this host
        assert gpu["fabric_status"] is None
        assert gpu["processes"] == []

    def test_text_and_xml_agree(self):
        """The -q text capture of the same moment says the same as the XML the module reads."""
        text = data("smi_q.txt")
        details = smi.parse_details_xml(data("smi_q.xml"))
        assert re.search(rf"^CUDA Version\s+: {re.escape(details['cuda_version'])}$", text, re.M)
        assert re.search(rf"^Driver Version\s+: {re.escape(details['driver_version'])}$", text, re.M)
        assert re.search(rf"^\s+Compute Mode\s+: {details['gpus'][0]['compute_mode']}$", text, re.M)

    def test_fabric_on_an_nvswitch_host(self):
        xml = data("smi_q.xml").replace("<state>N/A</state>", "<state>In Progress</state>", 1)
        xml = xml.replace("<status>N/A</status>", "<status>N/A</status>", 1)
        details = smi.parse_details_xml(xml)
        assert details["gpus"][0]["fabric_state"] == "In Progress"
        assert smi.fabric_summary(details["gpus"]) == {
            "fabric_manager_required": True,
            "fabric_state": "In Progress",
            "fabric_ready": False,
        }
        done = data("smi_q.xml").replace("<state>N/A</state>", "<state>Completed</state>", 1)
        done = done.replace("<status>N/A</status>", "<status>Success</status>", 1)
        summary = smi.fabric_summary(smi.parse_details_xml(done)["gpus"])
        assert summary == {"fabric_manager_required": True, "fabric_state": "Completed", "fabric_ready": True}

    def test_no_fabric(self):
        summary = smi.fabric_summary(smi.parse_details_xml(data("smi_q.xml"))["gpus"])
        assert summary == {"fabric_manager_required": False, "fabric_state": None, "fabric_ready": True}

    def test_processes_in_xml(self):
        xml = data("smi_q.xml").replace(
            "<processes>\n\t\t</processes>",
            "<processes><process_info><pid>427</pid><type>C</type><process_name>python3</process_name>"
            "<used_memory>2426 MiB</used_memory></process_info></processes>",
        )
        (proc,) = smi.parse_details_xml(xml)["gpus"][0]["processes"]
        assert proc == {"pid": 427, "type": "C", "process_name": "python3", "used_memory_mib": 2426}

    def test_not_xml(self):
        with pytest.raises(
            smi.NvidiaSmiParseError, match=r"did not print XML .*first line: 'Failed to initialize NVML"
        ):
            smi.parse_details_xml("Failed to initialize NVML: Driver/library version mismatch\n")


def test_merge():
    gpus = smi.parse_gpu_query(data("smi_query_gpu.csv"))
    apps = smi.parse_compute_apps(data("smi_compute_apps_busy.csv"))
    details = smi.parse_details_xml(data("smi_q.xml"))
    merged = smi.merge_gpu_info(gpus, apps, details)
    assert merged["count"] == 1
    assert merged["driver_version"] == "580.159.04"
    assert merged["cuda_version"] == "13.0"
    assert merged["fabric_manager_required"] is False
    gpu = merged["gpus"][0]
    assert gpu["compute_mode"] == "Default"
    assert gpu["architecture"] == "Hopper"
    assert gpu["processes"] == [{"pid": 427, "process_name": "python3", "used_memory_mib": 2426}]
