"""Calibration sets: the on-disk format, its checks, and the three sources (recording, folder, synthetic)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from calibration.capture import from_folder, from_recording, synthetic
from calibration.errors import CalibrationError
from calibration.sets import CalibrationSet, load_set, write_set
from runtime.manifest import Manifest
from xvla.errors import OutputError
from xvla_edge.cli import main


def recording(directory: Path, frames: int = 9, slots: tuple[int, ...] = (0, 1), seed: int = 0, **overrides) -> Path:
    """A recorder dump in the daemon's format, written by hand so that tests can break it."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    mask = np.zeros((frames, 3), bool)
    mask[:, list(slots)] = True
    mask[3, slots[-1]] = False  # one frame lost a camera
    arrays = {"time": np.arange(frames) * 0.1 + 100.0, "proprio": rng.normal(size=(frames, 20)).astype(np.float32),
              "view_mask": mask}
    for k in slots:
        arrays[f"image_{k}"] = rng.integers(0, 256, (frames, 48, 64, 3), dtype=np.uint8)
    arrays.update(overrides)
    np.savez(directory / "observations.npz", **{k: v for k, v in arrays.items() if v is not None})
    (directory / "meta.json").write_text(json.dumps({"instruction": "open the drawer", "domain_id": 3,
                                                     "bundle": "/bundles/x", "reason": "request", "created": "now"}))
    return directory


def test_write_and_load_round_trip(fp32_bundle, tmp_path) -> None:
    s = synthetic(Manifest.load(fp32_bundle), 5, seed=9)
    loaded = load_set(write_set(s, tmp_path / "s"))
    assert len(loaded) == 5 and loaded.instructions == s.instructions
    for k in (0, 1):
        np.testing.assert_array_equal(loaded.images[k], s.images[k])
    np.testing.assert_array_equal(loaded.proprio, s.proprio)
    np.testing.assert_array_equal(loaded.seeds, s.seeds)
    np.testing.assert_array_equal(loaded.domain_ids, np.full(5, 3))
    assert loaded.images[0].shape == (5, 64, 64, 3) and set(loaded.images) == {0, 1}
    # noise comes from the seed alone: the same for every model compared on it, different per observation
    np.testing.assert_array_equal(loaded.noise(2, (30, 20)),
                                  np.random.default_rng(int(s.seeds[2])).standard_normal((30, 20), dtype=np.float32))
    assert not np.array_equal(loaded.noise(1, (30, 20)), loaded.noise(2, (30, 20)))
    obs = loaded.observation(4, (30, 20))
    assert obs.images[2] is None and obs.noise.shape == (30, 20) and obs.instruction == s.instructions[4]
    with pytest.raises(OutputError, match="already exists; pass --force"):
        write_set(s, tmp_path / "s")


@pytest.fixture()
def stored(calib_set, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(calib_set, copy)
    return copy


def test_checksum_mismatch_is_refused(stored) -> None:
    data = bytearray((stored / "image_1.npy").read_bytes())
    data[-1] ^= 0xFF  # one pixel value, same size
    (stored / "image_1.npy").write_bytes(bytes(data))
    with pytest.raises(CalibrationError, match=r"image_1\.npy: sha256 .* does not match calibration\.json"):
        load_set(stored)


def test_image_size_other_than_declared_is_refused(stored) -> None:
    index = json.loads((stored / "calibration.json").read_text())
    index["views"][0]["height"] = 32
    (stored / "calibration.json").write_text(json.dumps(index))
    with pytest.raises(CalibrationError, match=r"image_0\.npy: shape \(12, 64, 64, 3\) uint8; calibration\.json "
                                               r"declares count 12 and views\[slot 0\] 32x64, so expected "
                                               r"\(12, 32, 64, 3\)"):
        load_set(stored)


def test_missing_file_is_refused(stored) -> None:
    (stored / "proprio.npy").unlink()
    with pytest.raises(CalibrationError, match=r"proprio\.npy: listed in calibration\.json but missing"):
        load_set(stored)
    with pytest.raises(CalibrationError, match=r"calibration\.json: not found"):
        load_set(stored / "nowhere")


def test_set_that_does_not_fit_the_bundle_is_refused(fp32_bundle, tmp_path, capsys) -> None:
    man = Manifest.load(fp32_bundle)
    good = synthetic(man, 3)
    wrong_proprio = CalibrationSet(good.images, good.view_mask, good.proprio[:, :14].copy(), good.instructions,
                                   good.domain_ids, good.seeds)
    with pytest.raises(CalibrationError, match=r"proprio has 14 values per observation; bundle .* expects 20"):
        wrong_proprio.check_bundle(man, fp32_bundle)
    other_domain = CalibrationSet(good.images, good.view_mask, good.proprio, good.instructions,
                                  np.array([3, 7, 3]), good.seeds)
    with pytest.raises(CalibrationError, match="observation 1 has domain_id 7; bundle .* exported for domain 3"):
        other_domain.check_bundle(man, fp32_bundle)
    mask = good.view_mask.copy()
    mask[2, 2] = True
    three_views = CalibrationSet({**good.images, 2: good.images[0]}, mask, good.proprio, good.instructions,
                                 good.domain_ids, good.seeds)
    with pytest.raises(CalibrationError, match="observation 2 has an image in view slot 2; .* for 2 view"):
        three_views.check_bundle(man, fp32_bundle)
    # through the command line: exit 2 and the message on stderr
    write_set(wrong_proprio, tmp_path / "wrong")
    assert main(["calibrate", "check", str(fp32_bundle), "--set", str(tmp_path / "wrong")]) == 2
    assert "proprio has 14 values per observation" in capsys.readouterr().err


def test_capture_from_a_recording(fp32_bundle, tmp_path) -> None:
    """A dump of the daemon's own recorder becomes a set: every 2nd of 9 frames, pixels and proprio unchanged."""
    from xvla_edge.daemon.recorder import Recorder

    rng = np.random.default_rng(0)
    recorder = Recorder(60.0, tmp_path / "recordings", bundle=str(fp32_bundle))
    frames = []
    for i in range(9):
        images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), None if i == 4 else
                  rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)]
        proprio = rng.normal(size=20).astype(np.float32)
        recorder.add_observation(100.0 + 0.1 * i, images, proprio, "open the drawer", 3)
        frames.append((images, proprio))
    rec = recorder.dump("request")
    out = tmp_path / "set"
    assert main(["calibrate", "capture", "--from-recording", str(rec), "--bundle", str(fp32_bundle),
                 "--max", "5", "--out", str(out)]) == 0
    s = load_set(out)
    for j, i in enumerate([0, 2, 4, 6, 8]):  # 5 evenly spaced of 9 frames
        np.testing.assert_array_equal(s.images[0][j], frames[i][0][0])
        np.testing.assert_array_equal(s.proprio[j], frames[i][1])
        assert s.view_mask[j].tolist() == [True, i != 4, False]
        if i != 4:
            np.testing.assert_array_equal(s.images[1][j], frames[i][0][1])
    assert s.instructions == ("open the drawer",) * 5 and (s.domain_ids == 3).all()
    assert s.source["kind"] == "recording" and s.source["frames"] == 9 and s.source["reason"] == "request"


@pytest.mark.parametrize("override, message", [
    (dict(proprio=None), r"observations\.npz: missing key 'proprio'"),
    (dict(image_0=np.zeros((9, 48, 64, 3), np.float32)), r"observations\.npz: image_0 must be \[9, H, W, 3\] uint8"),
    (dict(time=np.zeros(4)), r"observations\.npz: key 'time' has shape \(4,\); expected 9 rows"),
])
def test_bad_recording_is_refused(tmp_path, override, message) -> None:
    with pytest.raises(CalibrationError, match=message):
        from_recording(recording(tmp_path / "rec", **override))


def test_recording_for_another_robot_is_refused(fp32_bundle, tmp_path, capsys) -> None:
    rec = recording(tmp_path / "rec", slots=(0, 2))
    assert main(["calibrate", "capture", "--from-recording", str(rec), "--bundle", str(fp32_bundle),
                 "--out", str(tmp_path / "set")]) == 2
    assert "image in view slot 2" in capsys.readouterr().err and not (tmp_path / "set").exists()


def folder(tmp_path: Path, sizes=((40, 50), (30, 20))) -> tuple[Path, list[dict]]:
    rng = np.random.default_rng(1)
    root = tmp_path / "shots"
    root.mkdir()
    rows = []
    for i in range(4):
        names = []
        for k, (h, w) in enumerate(sizes):
            if k == 1 and i == 2:
                names.append(None)
                continue
            name = f"cam{k}_{i}.png"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name)
            names.append(name)
        rows.append({"images": names, "instruction": f"task {i % 2}", "proprio": rng.normal(size=20).round(4).tolist(),
                     "seed": 40 + i})
    return root, rows


def test_capture_from_a_folder_with_json_or_csv(tmp_path) -> None:
    root, rows = folder(tmp_path)
    (root / "obs.json").write_text(json.dumps({"domain_id": 3, "observations": rows}))
    with open(root / "obs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_0", "image_1", "instruction", "seed"] + [f"proprio_{j}" for j in range(20)])
        for r in rows:
            w.writerow([r["images"][0], r["images"][1] or "", r["instruction"], r["seed"]] + r["proprio"])
    from_json = from_folder(root, root / "obs.json")
    from_csv = from_folder(root, root / "obs.csv", domain_id=3)
    for s in (from_json, from_csv):
        assert len(s) == 4 and s.instructions == ("task 0", "task 1", "task 0", "task 1")
        np.testing.assert_array_equal(s.seeds, [40, 41, 42, 43])
        np.testing.assert_allclose(s.proprio, np.array([r["proprio"] for r in rows], np.float32))
        assert s.images[0].shape == (4, 40, 50, 3) and s.images[1].shape == (4, 30, 20, 3)
        np.testing.assert_array_equal(s.view_mask[:, 1], [True, True, False, True])
        np.testing.assert_array_equal(s.images[1][3], np.asarray(Image.open(root / "cam1_3.png")))
    with pytest.raises(CalibrationError, match=r"obs\.csv line 2: no domain_id"):
        from_folder(root, root / "obs.csv")


def test_folder_with_an_odd_image_size_or_a_missing_file_is_refused(tmp_path) -> None:
    root, rows = folder(tmp_path)
    Image.fromarray(np.zeros((41, 50, 3), np.uint8)).save(root / "cam0_3.png")
    (root / "obs.json").write_text(json.dumps(rows))
    with pytest.raises(CalibrationError, match=r"cam0_3\.png \(.*observations\[3\]\): 41x50 image in view slot 0; "
                                               r"expected 40x50 like .*cam0_0\.png"):
        from_folder(root, root / "obs.json", domain_id=3)
    (root / "cam1_1.png").unlink()
    with pytest.raises(CalibrationError, match=r"cam1_1\.png: image listed in .*observations\[1\] not found"):
        from_folder(root, root / "obs.json", domain_id=3)


def test_synthetic_needs_a_bundle(tmp_path, capsys) -> None:
    assert main(["calibrate", "capture", "--synthetic", "4", "--out", str(tmp_path / "s")]) == 2
    assert "--synthetic needs --bundle" in capsys.readouterr().err
