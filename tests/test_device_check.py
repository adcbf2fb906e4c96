"""The device check is ready before a GPU is lent: its --dry-run runs every step on the CPU at tiny sizes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tiny import ROOT


@pytest.mark.slow
def test_the_device_checks_dry_run_runs_every_step_and_writes_one_report(tmp_path):
    report = tmp_path / "report.md"
    done = subprocess.run([sys.executable, str(ROOT / "pipelines" / "device_check.py"), "--dry-run",
                           f"out={report}"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = report.read_text()
    assert "# Device check (dry run on the CPU, tiny sizes)" in text and "failed" not in text
    assert "5 passed" in text  # the CUDA tests, run on the CPU
    assert "| bf16 |" in text and "Data path: loader" in text
    assert "\n| 3 | " in text  # the 3-stage run reached its third stage
