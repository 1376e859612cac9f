"""The `ript` command line: config printing and clear failures on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ript_robot.cli import main as ript


def test_config_prints_the_resolved_values_with_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert ript(["config", "ript.rollouts_per_context=4", "task.image_size=32"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["ript"]["rollouts_per_context"] == 4
    assert printed["task"]["image_size"] == 32


def test_a_misspelled_key_fails_with_the_key_and_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    assert ript(["quickstart", "ript.iteratons=3"]) == 2
    err = capsys.readouterr().err
    assert "ript.iteratons" in err and "did you mean 'iterations'" in err


def test_eval_of_a_folder_that_is_no_checkpoint_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ript(["eval", str(tmp_path)]) == 2
    assert "policy.json" in capsys.readouterr().err


def test_a_quickstart_on_a_device_this_machine_lacks_is_refused_before_any_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`trainer.device` places the in-process job's policy too: a device the machine lacks is named at start."""
    out = tmp_path / "run"
    assert ript(["quickstart", "trainer.device=cuda:99", f"output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert "trainer.device='cuda:99'" in err and "set it to cpu" in err
    assert not (out / "checkpoints").exists()
