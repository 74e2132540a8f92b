"""Client layouts (:mod:`xvla_edge.serve.client_layouts`): openpi's example observations become the websocket's
own fields, checked by the same code; missing and malformed keys, and hostile layout files, refused by name."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from xvla_edge.serve.client_layouts import PRESETS, LayoutError, for_domain, load_layout, parse_layout
from xvla_edge.serve.request import Limits, RequestError, from_message

RNG = np.random.default_rng(3)


# The observations of openpi's examples/simple_client/main.py (Physical-Intelligence/openpi at 15a9616), which its
# LIBERO, DROID and ALOHA examples send with the same keys, shapes and dtypes.
def openpi_libero() -> dict:
    return {"observation/state": RNG.random(8),
            "observation/image": RNG.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            "observation/wrist_image": RNG.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            "prompt": "do something"}


def openpi_droid() -> dict:
    return {"observation/exterior_image_1_left": RNG.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            "observation/wrist_image_left": RNG.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            "observation/joint_position": RNG.random(7), "observation/gripper_position": RNG.random(1),
            "prompt": "do something"}


def openpi_aloha() -> dict:
    cams = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")
    return {"state": np.ones((14,)), "prompt": "do something",
            "images": {c: RNG.integers(0, 256, (3, 224, 224), dtype=np.uint8) for c in cams}}


def translated(preset: str, message: dict, domain: int = 3, width: int = 20):
    layout = for_domain(PRESETS[preset], domain, [domain])
    assert layout.applies_to(message)
    return from_message(layout.native(message, {domain: width}), Limits())


def test_openpi_libero_and_droid_observations_become_requests():
    msg = openpi_libero()
    r = translated("openpi-libero", msg)
    assert [img.tobytes() for img in r.images] == [msg["observation/image"].tobytes(),
                                                   msg["observation/wrist_image"].tobytes()]
    np.testing.assert_array_equal(r.proprio, np.concatenate([msg["observation/state"], np.zeros(12)]).astype(np.float32))
    assert r.instruction == "do something" and r.domain_id == 3 and r.steps is None
    msg = openpi_droid()
    r = translated("openpi-droid", msg, domain=0, width=20)
    state = np.concatenate([msg["observation/joint_position"], msg["observation/gripper_position"]])
    np.testing.assert_array_equal(r.proprio[:8], state.astype(np.float32))
    assert r.proprio.shape == (20,) and not r.proprio[8:].any() and r.domain_id == 0
    assert r.images[1].tobytes() == msg["observation/wrist_image_left"].tobytes()


def test_openpi_aloha_images_come_channels_first_and_four_cameras_fill_three_views():
    msg = openpi_aloha()
    r = translated("openpi-aloha", msg, domain=5, width=14)
    for view, cam in zip(r.images, ("cam_high", "cam_left_wrist", "cam_right_wrist")):
        assert view.shape == (224, 224, 3) and view.flags.c_contiguous
        np.testing.assert_array_equal(view, np.moveaxis(msg["images"][cam], 0, -1))
    np.testing.assert_array_equal(r.proprio, np.ones(14, np.float32))  # as wide as the bundle: nothing padded


def test_extensions_pass_through_and_own_messages_are_not_translated():
    rows, weights = np.ones((3, 20), np.float32), np.array([1, 1, 0.5], np.float32)
    msg = {**openpi_libero(), "seed": 7, "steps": 4, "prefix": {"rows": rows, "weights": weights}}
    r = translated("openpi-libero", msg)
    assert (r.seed, r.steps) == (7, 4)
    np.testing.assert_array_equal(r.prefix[0], rows)  # real-time chunking's prefix, as sent
    np.testing.assert_array_equal(r.prefix[1], weights)
    own = {"image0": msg["observation/image"], "language_instruction": "x", "proprio": np.zeros(20), "domain_id": 3}
    assert not PRESETS["openpi-libero"].applies_to(own)  # RemotePolicy's messages are read as they are
    assert not PRESETS["openpi-libero"].applies_to([1, 2])


@pytest.mark.parametrize("preset, change, message", [
    ("openpi-libero", lambda m: m.pop("observation/wrist_image"),
     "observation/wrist_image: missing (layout openpi-libero reads a field from it)"),
    ("openpi-libero", lambda m: m.pop("prompt"), "prompt: missing (layout openpi-libero reads the instruction from it)"),
    ("openpi-libero", lambda m: m.update({"observation/state": "high"}),
     'observation/state: expected a 1-D numeric array, got "high"'),
    ("openpi-libero", lambda m: m.update({"observation/state": np.zeros((2, 4))}),
     "observation/state: expected a 1-D numeric array, got an array of shape [2, 4] and dtype float64"),
    ("openpi-libero", lambda m: m.update({"observation/state": np.array([np.nan] * 8)}),
     "proprio: contains NaN or Inf"),
    ("openpi-libero", lambda m: m.update({"observation/image": np.zeros((224, 224, 4), np.uint8)}),
     "image0: expected an HxWx3 uint8 array, got an array of shape [224, 224, 4] and dtype uint8"),
    ("openpi-libero", lambda m: m.update({"prompt": "\ud800"}), "language_instruction: "),
    ("openpi-aloha", lambda m: m["images"].pop("cam_left_wrist"),
     'images["cam_left_wrist"]: missing (layout openpi-aloha reads a field from it)'),
    ("openpi-aloha", lambda m: m.update({"images": [1, 2]}), 'images["cam_high"]: missing'),
    ("openpi-aloha", lambda m: m["images"].update({"cam_high": np.zeros((224, 224, 3), np.uint8)}),
     'images["cam_high"]: expected a 3xHxW uint8 array (channels first), got an array of shape [224, 224, 3]'),
    ("openpi-droid", lambda m: m.update({"observation/gripper_position": True}),
     "observation/gripper_position: expected a 1-D numeric array, got true"),
])
def test_missing_and_malformed_fields_are_named_by_the_clients_key(preset, change, message):
    msg = {"openpi-libero": openpi_libero, "openpi-aloha": openpi_aloha, "openpi-droid": openpi_droid}[preset]()
    change(msg)
    with pytest.raises(RequestError, match="^" + re.escape(message)) as exc:
        translated(preset, msg, width=20 if preset != "openpi-aloha" else 14)
    assert exc.value.status == 400


def test_a_longer_state_is_not_cut_and_padding_is_opt_in():
    layout = for_domain(PRESETS["openpi-libero"], 3, [3])
    msg = {**openpi_libero(), "observation/state": RNG.random(22)}
    assert from_message(layout.native(msg, {3: 20}), Limits()).proprio.shape == (22,)  # refused by the bundle later
    plain = for_domain(parse_layout({"images": ["observation/image"], "proprio": "observation/state",
                                     "instruction": "prompt"}, "plain.json"), None, [3])
    assert from_message(plain.native(openpi_libero(), {3: 20}), Limits()).proprio.shape == (8,)


def test_a_layout_file_reads_like_the_preset(tmp_path):
    path = tmp_path / "libero.json"
    path.write_text(json.dumps({"images": ["observation/image", "observation/wrist_image"],
                                "proprio": ["observation/state"], "instruction": "prompt", "pad_proprio": True}))
    layout = load_layout(str(path))
    preset = PRESETS["openpi-libero"]
    assert (layout.images, layout.proprio, layout.instruction, layout.pad_proprio, layout.actions) == \
        (preset.images, preset.proprio, preset.instruction, True, "actions")
    nested = tmp_path / "aloha.json"
    nested.write_text(json.dumps({"images": [["images", "cam_high"], None, ["images", "cam_left_wrist"]],
                                  "proprio": [["robot", "qpos"]], "instruction": "task", "channels_first": True,
                                  "default_instruction": "fold the towel", "actions": "act"}))
    layout = for_domain(load_layout(str(nested)), None, [5])
    msg = {"images": {"cam_high": np.zeros((3, 8, 8), np.uint8), "cam_left_wrist": np.ones((3, 8, 8), np.uint8)},
           "robot": {"qpos": [0.5] * 14}}
    r = from_message(layout.native(msg, {5: 14}), Limits())
    assert r.images[1] is None and r.images[2].shape == (8, 8, 3) and r.instruction == "fold the towel"
    assert layout.actions == "act" and r.domain_id == 5


@pytest.mark.parametrize("data, message", [
    ({"proprio": "s", "instruction": "p"}, "images: missing: expected a list of 1 ... 3 key paths"),
    ({"images": [], "proprio": "s", "instruction": "p"}, "images = []: expected a list of 1 ... 3 key paths"),
    ({"images": [None, None], "proprio": "s", "instruction": "p"}, "images: expected at least one key path"),
    ({"images": ["a", "b", "c", "d"], "proprio": "s", "instruction": "p"}, "images = [\"a\", \"b\", \"c\", \"d\"]"),
    ({"images": [3], "proprio": "s", "instruction": "p"}, "images[0] = 3: expected a key (a string of 1 ... 256"),
    ({"images": [["a"] * 9], "proprio": "s", "instruction": "p"}, "images[0] = [\"a\", "),
    ({"images": [""], "proprio": "s", "instruction": "p"}, 'images[0] = "": expected a key'),
    ({"images": ["a"], "proprio": [], "instruction": "p"}, "proprio = []: expected 1 ... 16 key paths"),
    ({"images": ["a"], "proprio": [1], "instruction": "p"}, "proprio[0] = 1: expected a key"),
    ({"images": ["a"], "proprio": "s"}, "instruction: missing: expected a key"),
    ({"images": ["a"], "proprio": "s", "instruction": "p", "channels_first": "yes"},
     'channels_first = "yes": expected true or false'),
    ({"images": ["a"], "proprio": "s", "instruction": "p", "default_instruction": "x" * 100000},
     "default_instruction: "),
    ({"images": ["a"], "proprio": "s", "instruction": "p", "actions": ""}, 'actions = "": expected a key of 1'),
    ({"images": ["a"], "proprio": "s", "instruction": "p", "pad_proprios": True},
     'pad_proprios: unknown key (did you mean "pad_proprio"?)'),
])
def test_layout_file_problems_are_named(data, message):
    with pytest.raises(LayoutError) as exc:
        parse_layout(data, "layout.json")
    assert f"layout.json: {message}" in str(exc.value)


@pytest.mark.parametrize("content, message", [
    (b"{", "not valid JSON"),
    (b'{"images": NaN}', "not valid JSON (NaN is not a JSON value"),
    (b"[1]", "expected a JSON object, got [1]"),
    (b"\xff\xfe", "not valid JSON"),
    (b" " * (64 << 10) + b"{}", "larger than 65536 bytes"),
    (b"[" * 100000 + b"]" * 100000, "larger than 65536 bytes"),
    (b"[" * 30000 + b"]" * 30000, "not valid JSON"),  # nesting deeper than the parser goes
])
def test_hostile_layout_files_are_refused_by_name(tmp_path, content, message):
    path = tmp_path / "layout.json"
    path.write_bytes(content)
    with pytest.raises(LayoutError, match=f"^{path}: ") as exc:
        load_layout(str(path))
    assert message in str(exc.value)


def test_the_domain_of_translated_messages():
    assert for_domain(PRESETS["openpi-libero"], None, [3]).domain_id == 3
    assert for_domain(PRESETS["openpi-libero"], 5, [3, 5]).domain_id == 5
    with pytest.raises(LayoutError, match="--ws-layout openpi-libero: this server serves domains 3, 5; name the one "
                                          "its clients use with --ws-domain"):
        for_domain(PRESETS["openpi-libero"], None, [3, 5])
    with pytest.raises(LayoutError, match="--ws-domain 4: not served here; domains served: 3, 5"):
        for_domain(PRESETS["openpi-libero"], 4, [3, 5])
