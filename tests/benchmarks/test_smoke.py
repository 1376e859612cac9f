"""Benchmarks run in their smoke mode, so that none of them rots unnoticed between full runs.

Every script under benchmarks/ but two: kill_drill.py is the process integrity.py's smoke run starts and
kills, and ci.py runs this test command itself (store_index.py is a part of store.py, not a script)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


@pytest.mark.parametrize(
    ("script", "printed"),
    [
        ("episode_io.py", "speed-up: write"),
        ("policy_latency.py", "openvla_oft"),
        ("openvla_oft.py", '"rescore_error"'),
        ("runtime_overhead.py", "runtime per tick with writer and workspace filter"),
        ("libero_learning.py", '"fisher_exact_p"'),
        ("ros_latency.py", '"p99_replan_ms"'),
        ("libero_throughput.py", '"same_rendering_speedup"'),
        ("detector.py", '"rollout_accuracy"'),
        ("api_fuzz.py", '"api_server_errors"'),
        ("arm_session.py", '"control_periods"'),
        ("integrity.py", '"damages_detected"'),
        ("robot_budget.py", '"heldout_success_at_stop"'),
        ("store.py", "tick blocked by the writer"),
        ("learning.py", "no_dynamic_sampling_success"),
        ("distributed_learning.py", '"wall_clock_ratio_to_in_process"'),
        ("label_app.py", '"harness_roundtrip_p99_ms"'),
        ("libero_experts.py", '"min_task_success"'),
        ("calibration.py", "hand-eye"),
        ("operator_lag.py", '"rollouts_used_share"'),
    ],
)
def test_the_benchmark_runs_in_smoke_mode_and_saves_nothing(script: str, printed: str) -> None:
    before = {p: p.stat().st_mtime_ns for p in RESULTS.iterdir()}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert printed in run.stdout
    assert {p: p.stat().st_mtime_ns for p in RESULTS.iterdir()} == before


def test_the_gpu_evidence_script_runs_in_smoke_mode_on_this_machine_and_saves_nothing() -> None:
    before = {p: p.stat().st_mtime_ns for p in RESULTS.iterdir()}
    run = subprocess.run(
        [str(ROOT / "benchmarks" / "device" / "run.sh"), "--smoke"], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "gpu evidence: smoke run ok" in run.stdout and '"ppo_update_k8_s"' in run.stdout
    assert '"cpu_reloads_on_cpu": true' in run.stdout  # the quickstart's SFT and RIPT path
    assert {p: p.stat().st_mtime_ns for p in RESULTS.iterdir()} == before
