"""robot_budget.py's headline names are configs/robot.yaml's figures: a run that is not that recipe, measured as
the README's figures are, is refused before it runs (it would overwrite the file's top-level keys)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "robot_budget.py"
ROBOT = str(ROOT / "configs" / "robot.yaml")
PERSON = "task.scripted_operator=true"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--smoke", "--name", "robot", PERSON], "give --config configs/robot.yaml"),
        (["--smoke", "--name", "robot", "--config", str(ROOT / "configs" / "quickstart.yaml"), PERSON], "--config"),
        (["--smoke", "--name", "robot", "--config", ROBOT], f"give exactly ['{PERSON}']"),
        (["--smoke", "--name", "robot", "--config", ROBOT, PERSON, "ript.imitation_coef=0"], "another --name"),
        (["--smoke", "--name", "robot_ript_alone", "--config", ROBOT, PERSON], "give exactly no overrides"),
        (["--name", "robot", "--config", ROBOT, PERSON, "--seeds", "0"], "--seeds 0 1 2 3 4"),
        (["--name", "robot_ript_alone", "--config", ROBOT, "--seeds", "0", "1", "2", "3", "4", "--max-episodes", "100"],
         "--max-episodes 8000 or more"),
    ],
)  # fmt: skip
def test_a_headline_name_run_from_another_recipe_is_refused_saying_what_to_change(
    arguments: list[str], message: str
) -> None:
    run = subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and message in run.stderr, run.stderr[-1000:]
