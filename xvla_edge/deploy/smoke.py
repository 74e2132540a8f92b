"""The smoke inference of a staged bundle: one synthetic observation on the daemon's backend and device, within a
time limit; finite actions of the manifest's shape, or the flash is refused."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from runtime.types import Observation
from xvla_edge.deploy.layout import FlashError

SMOKE_TIMEOUT_S = 600.0  # the first TensorRT run of a full-size engine on a Jetson takes well under this


def smoke_test_within(seconds: float, staged: Path, backend: str, device: str) -> None:
    """:func:`smoke_test` on a worker thread; :class:`FlashError` when it has not returned after ``seconds`` (the
    thread is a daemon: a hung backend cannot keep the flash, or its lock, forever)."""
    failure: list[BaseException] = []

    def work() -> None:
        try:
            smoke_test(staged, backend, device)
        except BaseException as exc:  # noqa: BLE001 - handed to the flash thread below
            failure.append(exc)

    worker = threading.Thread(target=work, name="flash-smoke", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise FlashError(f"smoke inference on {backend}/{device} did not finish within {seconds:g} s (a hung backend "
                         "or device?)")
    if failure:
        raise failure[0]


def smoke_test(staged: Path, backend: str, device: str) -> None:
    """One inference on a synthetic observation; the actions must be finite and of the manifest's shape."""
    from runtime.policy import Policy

    with Policy.load(staged, backend=backend, device=device, verify=False) as policy:
        inputs, action = policy.manifest.inputs, policy.manifest.action
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) if v < int(inputs["views"]) else None
                  for v in range(int(inputs["view_slots"]))]
        chunk = policy.act(Observation(images=images, instruction="smoke test",
                                       proprio=np.zeros(int(inputs.get("state_dim", inputs["proprio_dim"])), np.float32)))
    expected = (int(action["chunk_length"]), int(action["output_dim"]))
    actions = np.asarray(chunk.actions)
    if actions.shape != expected or not np.isfinite(actions).all():
        raise FlashError(f"smoke inference of {staged}: expected finite actions of shape {expected}, got shape "
                         f"{actions.shape} with {int((~np.isfinite(actions)).sum())} non-finite values")
