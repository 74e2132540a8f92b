"""The recorder: the last N seconds of observations, chunks and commands, written to disk on request and on
faults. Recordings become calibration sets (``xvla-edge calibrate capture --from-recording``) and incident
reports.

A recording is a directory ``<directory>/<UTC yyyymmddTHHMMSSZ>-<reason>/`` written atomically (a hidden
temporary directory renamed into place):

- ``observations.npz``: ``time`` [N] float64, ``proprio`` [N, P] float32, ``instruction`` [N] str (the task
  each observation was computed for: an operator may change it mid-run), ``view_mask`` [N, 3] bool and
  ``image_<k>`` [N, H, W, 3] uint8 for each view slot with an image (absent frames zero, mask False);
- ``chunks.npz``: ``obs_time`` [M], ``actions`` [M, T, D], ``latency_s`` [M];
- ``commands.npz``: the control loop's trace, ``time`` [K], ``mode`` [K] (str), ``command``, ``measured``;
- ``meta.json``: ``instruction`` (the newest), ``domain_id``, ``bundle``, ``reason``, ``created``, counts.

Memory: three 224x224 RGB views at 10 observations/s over 30 s is 3 x 150 kB x 300 = 135 MB; size the ring
(``seconds``) and camera resolution together. Fault dumps are rate-limited (one per ``min_interval_s``)
and only the newest ``max_dumps`` recordings are kept, so a fault storm cannot fill the disk.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import threading
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Sequence

import numpy as np

from xvla.errors import XVLAError
from xvla.files import atomic_directory

NUM_SLOTS = 3


class RecorderError(XVLAError, ValueError):
    """An observation does not fit what the recorder already holds, or a recording cannot be written."""


class Recorder:
    def __init__(self, seconds: float, directory: Path, *, bundle: str = "", min_interval_s: float = 10.0,
                 max_dumps: int = 20) -> None:
        self.seconds, self.directory, self.bundle = float(seconds), Path(directory), bundle
        self.min_interval_s, self.max_dumps = min_interval_s, max_dumps
        self._obs: Deque[Dict[str, Any]] = deque()
        self._chunks: Deque[Dict[str, Any]] = deque()
        self._commands: Deque[Dict[str, Any]] = deque()
        self._meta: Dict[str, Any] = {"instruction": "", "domain_id": -1}
        self._lock = threading.Lock()
        self._last_dump = -np.inf

    def _trim(self, newest: float) -> None:
        for ring, key in ((self._obs, "time"), (self._chunks, "obs_time"), (self._commands, "time")):
            while ring and ring[0][key] < newest - self.seconds:
                ring.popleft()

    def add_observation(self, timestamp: float, images: Sequence[Optional[np.ndarray]], proprio: np.ndarray,
                        instruction: str, domain_id: int) -> None:
        images = list(images) + [None] * (NUM_SLOTS - len(images))
        with self._lock:
            if self._obs:
                for k, (old, new) in enumerate(zip(self._obs[-1]["images"], images)):
                    if old is not None and new is not None and old.shape != new.shape:
                        raise RecorderError(f"recorder: view {k} changed size from {old.shape} to {new.shape}")
            self._obs.append({"time": float(timestamp), "images": [None if i is None else i.copy() for i in images],
                              "proprio": np.asarray(proprio, np.float32).copy(), "instruction": str(instruction)})
            self._meta = {"instruction": instruction, "domain_id": int(domain_id)}
            self._trim(timestamp)

    def add_chunk(self, obs_timestamp: float, actions: np.ndarray, latency_s: float) -> None:
        with self._lock:
            self._chunks.append({"obs_time": float(obs_timestamp), "actions": np.array(actions),
                                 "latency_s": float(latency_s)})
            self._trim(obs_timestamp)

    def add_commands(self, trace: Dict[str, Any]) -> None:
        """Append the ticks of a control-loop trace newer than those already held."""
        with self._lock:
            last = self._commands[-1]["time"] if self._commands else -np.inf
            for i in np.flatnonzero(trace["time"] > last):
                self._commands.append({"time": float(trace["time"][i]), "mode": trace["mode"][i],
                                       "command": trace["command"][i], "measured": trace["measured"][i]})
            if self._commands:
                self._trim(self._commands[-1]["time"])

    def dump(self, reason: str, *, now: Optional[float] = None, force: bool = True) -> Optional[Path]:
        """Write a recording; with ``force=False`` (faults) at most one per ``min_interval_s`` (else None)."""
        import time

        now = time.monotonic() if now is None else now
        with self._lock:
            if not force and now - self._last_dump < self.min_interval_s:
                return None
            self._last_dump = now
            obs, chunks, commands, meta = list(self._obs), list(self._chunks), list(self._commands), dict(self._meta)
        created = _dt.datetime.now(_dt.timezone.utc)
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in reason)[:60]
        final = self.directory / f"{created:%Y%m%dT%H%M%S%fZ}-{safe}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with atomic_directory(final) as tmp:
                np.savez(tmp / "observations.npz", **_observations(obs))
                np.savez(tmp / "chunks.npz", **_stack(chunks, ("obs_time", "actions", "latency_s")))
                np.savez(tmp / "commands.npz", **_stack(commands, ("time", "mode", "command", "measured")))
                meta.update(bundle=self.bundle, reason=reason, created=created.isoformat(),
                            observations=len(obs), chunks=len(chunks), commands=len(commands))
                (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        except OSError as exc:  # not a directory, not permitted, disk full
            raise RecorderError(f"cannot write a recording into {self.directory} ([recorder].directory): "
                                f"{exc.strerror or exc}") from None
        self._prune()
        return final

    def _prune(self) -> None:
        recordings = sorted(p for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        for old in recordings[: max(len(recordings) - self.max_dumps, 0)]:
            shutil.rmtree(old, ignore_errors=True)


def _stack(items: List[Dict[str, Any]], keys: Sequence[str]) -> Dict[str, np.ndarray]:
    return {k: np.array([item[k] for item in items]) for k in keys}


def _observations(obs: List[Dict[str, Any]]) -> Dict[str, np.ndarray]:
    out = {"time": np.array([o["time"] for o in obs], np.float64),
           "proprio": np.array([o["proprio"] for o in obs], np.float32).reshape(len(obs), -1),
           "instruction": np.array([o["instruction"] for o in obs], dtype=str),
           "view_mask": np.array([[img is not None for img in o["images"]] for o in obs], bool).reshape(-1, NUM_SLOTS)}
    for k in range(NUM_SLOTS):
        shapes = [o["images"][k].shape for o in obs if o["images"][k] is not None]
        if shapes:
            out[f"image_{k}"] = np.stack([np.zeros(shapes[0], np.uint8) if o["images"][k] is None else o["images"][k]
                                          for o in obs])
    return out
