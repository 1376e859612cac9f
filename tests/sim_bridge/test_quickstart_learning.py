"""End-to-end learning: one demonstration per task fails, RIPT fixes it (a small budget of the main job)."""

from __future__ import annotations

import json

import pytest
import torch

from ript_robot.cli import main as ript
from ript_robot.config import QuickstartConfig, load_config
from ript_robot.train.logging import read_metrics
from sim_bridge.quickstart import run_quickstart

SMALL_BUDGET = [
    "pretrain.steps=1500",
    "pretrain_demos_per_task=40",
    "ript.iterations=10",
    "task.heldout_contexts_per_task=5",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.set_num_threads(2)  # the conv policy at batch 64+ gains from both cores
    out = tmp_path_factory.mktemp("quickstart")
    cfg = load_config(QuickstartConfig, None, [f"output_dir={out}", *SMALL_BUDGET])
    summary = run_quickstart(cfg, progress=False)
    torch.set_num_threads(1)
    return {"summary": summary, "out": out}


@pytest.mark.slow
def test_ript_lifts_one_demo_sft_on_the_training_contexts(run: dict) -> None:
    s = run["summary"]
    assert s["sft_success"] <= 0.35, "one demonstration per task should not solve the target scene"
    assert s["ript_success"] - s["sft_success"] >= 0.25, "RIPT should lift success by 25 points in 10 iterations"


@pytest.mark.slow
def test_quickstart_writes_metrics_plot_and_a_checkpoint_per_iteration(run: dict) -> None:
    out = run["out"]
    rows = read_metrics(out / "metrics.jsonl", "ript")
    assert [r["step"] for r in rows] == list(range(1, 11))
    for r in rows:
        assert r["initial_ratio_error"] < 1e-3  # the update starts from the policy that sampled
        assert r["groups_accepted"] + r["groups_rejected"] >= r["groups_accepted"] > 0
        assert {"approx_kl", "clipfrac", "loss", "rollout_success", "train_success"} <= r.keys()
    assert (out / "success.png").stat().st_size > 10_000
    assert any((out / "tensorboard").iterdir())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"iter_{i:03d}" for i in range(11)]
    assert json.loads((out / "summary.json").read_text())["iterations"] == 10


@pytest.mark.slow
def test_ript_eval_measures_a_saved_checkpoint(run: dict, capsys: pytest.CaptureFixture[str]) -> None:
    result_file = run["out"] / "eval.json"
    checkpoint = run["out"] / "checkpoints" / "iter_010"
    code = ript(["eval", str(checkpoint), "--contexts", "train", "--json", str(result_file)])
    assert code == 0
    result = json.loads(result_file.read_text())
    assert result["trials"] == 32
    assert result["success_rate"] == pytest.approx(run["summary"]["ript_success"])
    assert result["ci_low"] <= result["success_rate"] <= result["ci_high"]
    assert "policy v" in capsys.readouterr().out
