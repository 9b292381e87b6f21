"""The GPU throughput bench stays working: every preset, precision and memory format on a CPU with tiny
networks (``--smoke``; ``torch.compile`` is left to GPU runs: compiling takes minutes on a CPU)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu_throughput.py"


@pytest.mark.slow
def test_gpu_throughput_bench_prints_a_table_on_cpu():
    command = [sys.executable, str(BENCH), "--device", "cpu", "--smoke", "--compile", "off"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "preset" not in line]
    assert [row.split(" | ")[0][2:] for row in rows] == [
        "faithful RCA (VGG-16)",
        "shared-head RCA (ResNet-101)",
        "plain CAM (VGG-16)",
        "DeepLab-v2 ResNet-101",
    ]
    for row in rows:
        values = [float(cell) for cell in re.findall(r"\| ([\d.]+)", row)]
        assert len(values) == 3 and all(value > 0 for value in values), row
