"""`ript sim-train` on LIBERO: expert demonstrations, SFT, the trainer and a LIBERO actor, all through the store."""

from __future__ import annotations

import json
from pathlib import Path

from ript_robot.cli import main as ript
from ript_robot.data import EpisodeStore
from ript_robot.data.backend import Backend
from ript_robot.data.checkpoints import latest_version

TINY = ["policy.hidden_dim=32", "policy.channels=4", "policy.keypoints=4", "torch_threads=1"]


def test_sim_train_fits_expert_demos_publishes_a_policy_and_measures_it_on_held_out_scenes(tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "run"
    overrides = [
        f"store.uri={store}",
        f"trainer.output_dir={out}",
        "libero.suite=libero_object",
        "libero.image_size=32",
        "libero.max_steps=16",
        "libero.train_inits=2",
        "libero.heldout_inits=2",
        "libero.demos_per_task=1",
        "sft.steps=30",
        "ript.iterations=0",
        *TINY,
    ]
    assert ript(["sim-train", "--quiet", *overrides]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["suite"] == "libero_object" and summary["heldout_contexts"] == 2
    assert summary["heldout_before"] == summary["heldout_after"] == 0.0  # 16 steps are too few to place anything
    assert latest_version(Backend(str(store))) == 0
    stored = EpisodeStore(store, create=False).refresh()
    (demo,) = stored.records(kind="demonstration")  # the expert's, solved within the suite's own step limit
    assert demo.meta.context.context_id == "libero_object/0/49" and demo.reward == 1.0
    assert (out / "metrics.jsonl").read_text().count('"sft"') == 1
