"""robot_budget.py's headline names are configs/robot.yaml's figures: a run that is not that recipe is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "robot_budget.py"
ROBOT = str(ROOT / "configs" / "robot.yaml")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--name", "robot", "task.scripted_operator=true"], "give --config configs/robot.yaml"),
        (["--name", "robot", "--config", ROBOT], "add task.scripted_operator=true"),
        (["--name", "robot_ript_alone", "--config", ROBOT, "task.scripted_operator=true"], "drop task.scripted"),
    ],
)
def test_a_headline_name_run_from_another_recipe_is_refused_saying_what_to_change(
    arguments: list[str], message: str
) -> None:
    results = ROOT / "benchmarks" / "results"
    before = {p: p.stat().st_mtime_ns for p in results.iterdir()}
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", *arguments], capture_output=True, text=True)
    assert run.returncode == 2 and message in run.stderr, run.stderr[-1000:]
    assert {p: p.stat().st_mtime_ns for p in results.iterdir()} == before
