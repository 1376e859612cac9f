from __future__ import annotations

from pathlib import Path

import pytest

from ript_robot.config import (
    ConfigError,
    PolicyConfig,
    QuickstartConfig,
    RIPTConfig,
    SafetyConfig,
    dump_config,
    load_config,
)
from ript_robot.data.rosbag import BagTopics

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_without_file_or_overrides():
    config = load_config(QuickstartConfig)
    assert config == QuickstartConfig()
    assert config.ript.rollouts_per_context == 8
    assert config.sft.steps == 400


def test_yaml_values_are_applied(tmp_path):
    path = write(tmp_path, "seed: 5\nript:\n  iterations: 3\n  lr: 0.0005\npolicy:\n  distribution: laplace\n")
    config = load_config(QuickstartConfig, path)
    assert config.seed == 5
    assert config.ript.iterations == 3
    assert config.ript.lr == pytest.approx(5e-4)
    assert config.policy.distribution == "laplace"
    assert config.ript.groups_per_iteration == RIPTConfig().groups_per_iteration  # untouched default


def test_unknown_nested_key_names_key_file_and_suggestion(tmp_path):
    path = write(tmp_path, "ript:\n  iteratons: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(QuickstartConfig, path)
    message = str(info.value)
    assert "ript.iteratons" in message
    assert str(path) in message
    assert "did you mean 'iterations'" in message


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, "sede: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'sede'") as info:
        load_config(QuickstartConfig, path)
    assert "did you mean 'seed'" in str(info.value)


def test_bad_value_names_the_key(tmp_path):
    path = write(tmp_path, "ript:\n  rollouts_per_context: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(QuickstartConfig, path)
    message = str(info.value)
    assert "ript.rollouts_per_context" in message
    assert str(path) in message
    assert "1" in message


def test_overrides_parse_ints_floats_bools_and_strings(tmp_path):
    path = write(tmp_path, "seed: 5\n")
    config = load_config(
        QuickstartConfig,
        path,
        [
            "seed=3",
            "ript.lr=0.01",
            "ript.clip_high=1e-1",
            "ript.dynamic_sampling=false",
            "eval.deterministic=true",
            "policy.distribution=laplace",
            "task.pretrain_scenes=[lab_a, lab_b]",
        ],
    )
    assert config.seed == 3 and isinstance(config.seed, int)  # override wins over the file
    assert config.ript.lr == pytest.approx(0.01)
    assert config.ript.clip_high == pytest.approx(0.1)
    assert config.ript.dynamic_sampling is False
    assert config.eval.deterministic is True
    assert config.policy.distribution == "laplace"
    assert config.task.pretrain_scenes == ["lab_a", "lab_b"]


def test_bad_overrides_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        load_config(QuickstartConfig, None, ["ript.lr"])
    with pytest.raises(ConfigError, match="'seed' is a value, not a section"):
        load_config(QuickstartConfig, write(tmp_path, "seed: 1\n"), ["seed.x=1"])
    with pytest.raises(ConfigError, match="'seed'"):
        load_config(QuickstartConfig, None, ["seed.x=1"])
    with pytest.raises(ConfigError, match=r"override ript\.iterations=-1") as info:
        load_config(QuickstartConfig, None, ["ript.iterations=-1"])
    assert "ript.iterations" in str(info.value)
    with pytest.raises(ConfigError, match="did you mean 'minibatch_size'"):
        load_config(QuickstartConfig, None, ["ript.minibatch_sise=4"])


def test_min_std_must_be_below_max_std():
    with pytest.raises(ConfigError, match="min_std"):
        load_config(QuickstartConfig, None, ["policy.min_std=1.0", "policy.max_std=1.0"])
    with pytest.raises(ValueError, match="min_std"):
        PolicyConfig(min_std=0.5, max_std=0.4)
    assert PolicyConfig(min_std=0.1, max_std=0.2).max_std == 0.2


def test_safety_bounds_must_be_ordered():
    with pytest.raises(ValueError, match="action_low"):
        SafetyConfig(action_low=1.0, action_high=-1.0)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(QuickstartConfig, missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_yaml(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="top level must be a mapping") as info:
        load_config(QuickstartConfig, path)
    assert str(path) in str(info.value)


def test_invalid_yaml(tmp_path):
    path = write(tmp_path, "ript: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(QuickstartConfig, path)


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(QuickstartConfig, write(tmp_path, "")) == QuickstartConfig()


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_dump_config_round_trips(tmp_path):
    config = load_config(QuickstartConfig, None, ["seed=9", "ript.iterations=2", "policy.chunk_size=4"])
    path = write(tmp_path, dump_config(config))
    assert load_config(QuickstartConfig, path) == config


SHIPPED_CLASSES = {"bag_topics.yaml": BagTopics}  # the rest are the main job's config


@pytest.mark.parametrize(
    "path",
    SHIPPED or [pytest.param(None, marks=pytest.mark.skip(reason=f"no configs/*.yaml in {CONFIG_DIR} yet"))],
    ids=[p.name for p in SHIPPED] or ["none"],
)
def test_shipped_configs_load(path):
    cls = SHIPPED_CLASSES.get(path.name, QuickstartConfig)
    assert isinstance(load_config(cls, path), cls)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["ript.rollouts_per_context=1"], ["ript.rollouts_per_context", "greater than or equal to 2"]),
        (
            ["ript.rollouts_per_context=4", "ript.episode_budget=3"],
            ["ript.episode_budget (3)", "ript.rollouts_per_context (4)", "at least 4, or 0"],
        ),
        (["ript.iterations=5", "trainer.max_staleness=5"], ["trainer.max_staleness (5)", "use 0..4"]),
        (["trainer.device=gpu"], ["trainer.device", "cpu, cuda or cuda:N", "'gpu'"]),
        (["trainer.device=cuda:x"], ["trainer.device", "cuda:N"]),
    ],
)
def test_a_recipe_that_cannot_work_is_refused_naming_the_key_and_the_range(overrides, named):
    with pytest.raises(ConfigError) as caught:
        load_config(QuickstartConfig, None, overrides)
    for text in named:
        assert text in str(caught.value)


def test_the_main_jobs_config_file_is_the_embedded_defaults_key_for_key():
    """configs/quickstart.yaml says it holds the defaults `ript config` prints: a new setting must appear in it."""
    text = (CONFIG_DIR / "quickstart.yaml").read_text()
    body = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
    assert body == dump_config(QuickstartConfig()), "regenerate it: ript config, under its three comment lines"
