"""Config parsing: official and LeRobot config.json, and errors that name the field."""

from __future__ import annotations

import json

import pytest

from xvla.config import XVLAConfig, config_from_dict, load_config
from xvla.errors import ConfigError
from xvla.sizes import size_config


def official_dict(**top) -> dict:
    d = size_config("tiny")[0].to_official_dict()
    d.update(top)
    return d


@pytest.mark.parametrize("size, overrides", [("tiny", {}), ("tiny", {"text_tokens": 12}), ("sim", {})])
def test_official_round_trip_is_identity(size: str, overrides: dict) -> None:
    cfg = size_config(size, **overrides)[0]
    assert config_from_dict(json.loads(json.dumps(cfg.to_official_dict()))) == cfg


def test_full_size_defaults_match_the_release() -> None:
    cfg = XVLAConfig()
    assert (cfg.hidden_size, cfg.depth, cfg.num_heads, cfg.num_domains, cfg.len_soft_prompts) == (1024, 24, 16, 30, 32)
    assert cfg.dim_action == 20 and cfg.tokens_per_view(224) == 50
    assert cfg.vision.embed_dim == (256, 512, 1024, 2048) and cfg.text.vocab_size == 51289


def test_native_vision_field_names_are_accepted() -> None:
    d = official_dict()
    vc = d["florence_config"]["vision_config"]
    vc["embed_dim"] = vc.pop("dim_embed")
    vc["max_position_embeddings"] = vc.pop("image_pos_embed")["max_pos_embeddings"]
    assert config_from_dict(d) == size_config("tiny")[0]


def test_lerobot_config_is_read() -> None:
    d = official_dict()
    d.pop("model_type")
    d.pop("num_actions")
    d.update(type="xvla", chunk_size=30, max_state_dim=20)
    assert config_from_dict(d) == size_config("tiny")[0]


def test_lerobot_proprio_wider_than_the_action_and_a_narrower_state() -> None:
    """LeRobot sizes the proprio input by max_state_dim (32 by default) and zero-pads the robot's state
    (input_features observation.state) to it."""
    d = official_dict(type="xvla", max_state_dim=32)
    cfg = config_from_dict(d)
    assert (cfg.dim_action, cfg.dim_proprio, cfg.state_width) == (20, 32, None)
    d["input_features"] = {"observation.state": {"type": "STATE", "shape": [8]},
                           "observation.images.front": {"type": "VISUAL", "shape": [3, 64, 64]}}
    assert config_from_dict(d).state_width == 8
    d.pop("max_state_dim")  # LeRobot's default
    assert config_from_dict(d).dim_proprio == 32
    # view slots: LeRobot's num_image_views, else its camera features (official: always 3)
    assert config_from_dict(d).view_slots == 1  # one VISUAL feature above
    assert config_from_dict({**d, "num_image_views": 2}).view_slots == 2
    with pytest.raises(ConfigError, match=r"view slots \(LeRobot num_image_views\) 4: expected 1 ... 3"):
        config_from_dict({**d, "num_image_views": 4})
    with pytest.raises(ConfigError, match="official config.json has no proprio or state width"):
        cfg.to_official_dict()


@pytest.mark.parametrize("update, message", [
    ({"max_state_dim": 12}, r"max_state_dim\) 12: expected 20 ... 1024 for action_mode 'ee6d'"),
    ({"max_state_dim": 32.0}, "max_state_dim must be an integer, got 32.0"),
    ({"input_features": {"observation.state": {"shape": [40]}}}, r"state width 40 .* expected 1 ... 31"),
    ({"input_features": {"observation.state": {"shape": "8"}}}, "observation.state.shape = '8'"),
    ({"use_proprio": False}, "use_proprio is false"),
])
def test_lerobot_state_settings_that_cannot_work_are_named(update: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(official_dict(**{"type": "xvla", "max_state_dim": 32, **update}))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(action_mode="ee7d"), "action_mode 'ee7d' is unknown"),
        (lambda d: d.update(hidden_size=30), r"hidden_size \(30\) must be divisible by num_heads \(4\)"),
        (lambda d: d["florence_config"].pop("vision_config"), "florence_config.vision_config is missing"),
        (lambda d: d["florence_config"]["vision_config"].update(depths=[1, 1]), "depths has 2 entries; expected 4"),
        (lambda d: d["florence_config"]["text_config"].update(d_model=48), r"projection_dim \(32\) must equal text_config.d_model \(48\)"),
        (lambda d: d["florence_config"]["text_config"].pop("vocab_size"), "missing required field 'vocab_size'"),
        (lambda d: d.update(action_mode="auto", real_action_dim=25), r"real_action_dim \(25\) must be in 1..max_action_dim \(20\)"),
        (lambda d: d.update(model_type="bert"), "model_type is 'bert'"),
        (lambda d: d.update(use_hetero_proj=True), "use_hetero_proj"),
    ],
)
def test_inconsistent_configs_are_rejected_by_field(mutate, message) -> None:
    d = official_dict()
    mutate(d)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(d)


def test_unreadable_config_file_names_the_path(tmp_path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config.json: not valid JSON"):
        load_config(tmp_path)
