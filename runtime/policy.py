"""The robot-side API: a bundle + a backend → ``policy.act(observation) -> ActionChunk``.

    policy = Policy.load("bundles/widowx")                 # onnxruntime on the CPU
    chunk = policy.act(Observation(images=[rgb], instruction="put the spoon on the towel",
                                   proprio=state, timestamp=t_capture))
    future = policy.act_async(next_obs)                     # start the next chunk while this one executes
    chunks = policy.act_batch([obs_a, obs_b, obs_c])        # a bundle exported with --batch-sizes
    chunk = server.act(obs, domain_id=0)                    # a server bundle (export --domains): any domain it lists
    chunk = policy.act(obs, prefix=scheduled_prefix(rows, length=30, dim=20, delay=3, horizon=15))
                                                            # real-time chunking: continue the executing chunk

Preprocessing is the checkpoint's own (:mod:`xvla.preprocessing`: numpy + Pillow + tokenizers); the
instruction's token ids are cached while it does not change. This module imports neither torch nor
``export``.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.backends import names
from runtime.backends.base import Backend, BackendError, BackendUnavailable
from runtime.decode import chunk_timestamps, decode_arms
from runtime.graph_stamp import check_stamp
from runtime.manifest import BundleError, Manifest
from runtime.types import (ActionChunk, CheckedObservation, Observation, PrefixUnsupported, UnknownDomain,
                           check_timestamp, checked_proprio)
from xvla.errors import InputError
from xvla.realtime_chunking import Prefix, check_prefix, stack_prefixes
from xvla.constants import MAX_STEPS, NUM_VIEWS
from xvla.instruction import check_instruction
from xvla.preprocessing import ImageProcessor, TextTokenizer, check_views


def create_backend(manifest: Manifest, bundle_dir: Path, backend: str, device: str, **options: object) -> Backend:
    """Instantiate a backend by name (``auto``: tensorrt when its engines and ``tensorrt`` are present)."""
    if backend not in names.CHOICES:
        raise BackendError(f"unknown backend {backend!r}; available: {list(names.CHOICES)}")
    if backend == names.AUTO:
        from runtime.backends import tensorrt_available

        backend = names.TENSORRT if device == "cuda" and tensorrt_available(bundle_dir) else names.ONNXRUNTIME
    if backend == names.ONNXRUNTIME:
        from runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(manifest, bundle_dir, device=device, **options)  # type: ignore[arg-type]
    if backend == names.TORCH:
        try:
            from runtime.backends.torch_backend import TorchBackend
        except (ImportError, OSError) as exc:  # torch absent, or installed but its libraries do not load
            raise BackendUnavailable.of(names.TORCH, exc, needed_by="the torch backend") from exc
        return TorchBackend(manifest, bundle_dir, device=device, **options)  # type: ignore[arg-type]
    from runtime.backends.tensorrt.backend import TensorRTBackend

    return TensorRTBackend(manifest, bundle_dir, device=device, **options)  # type: ignore[arg-type]


class Policy:
    """Observation → action chunk for one bundle. Not thread-safe: one chunk at a time."""

    def __init__(self, manifest: Manifest, bundle_dir: Path, backend: Backend) -> None:
        self.manifest = manifest
        self.bundle_dir = bundle_dir
        self.backend = backend
        inputs = manifest.inputs
        self.views = int(inputs["views"])
        self.images = ImageProcessor.from_dir(bundle_dir)
        if self.images.output_size != (inputs["image_size"], inputs["image_size"]):
            raise BundleError(f"{bundle_dir}/preprocessor_config.json gives {self.images.output_size} images; "
                              f"the manifest says {inputs['image_size']}")
        self.tokenizer = TextTokenizer(bundle_dir, int(inputs["token_length"]))
        self._instruction: str | None = None
        self._ids: np.ndarray | None = None
        action = manifest.action
        self.chunk_shape = (1, int(action["chunk_length"]), int(action["dim"]))
        self._rng = np.random.default_rng()
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def load(cls, bundle_dir: str | Path, backend: str = "auto", device: str = "cpu", *, verify: bool = True,
             **options: object) -> Policy:
        """Load a bundle; ``verify`` checks every file's sha256 against the manifest first."""
        bundle_dir = Path(bundle_dir)
        manifest = Manifest.load(bundle_dir)
        if verify:
            manifest.verify_files(bundle_dir)
        check_stamp(manifest, bundle_dir)
        return cls(manifest, bundle_dir, create_backend(manifest, bundle_dir, backend, device, **options))

    @property
    def state_dim(self) -> int:
        """Values ``Observation.proprio`` holds: the manifest's ``inputs.state_dim`` (zero-padded to
        ``proprio_dim`` here, as LeRobot pads to its ``max_state_dim``), else ``proprio_dim``."""
        inputs = self.manifest.inputs
        return int(inputs.get("state_dim", inputs["proprio_dim"]))

    # ----------------------------------------------------------------------------------------------
    def token_ids(self, instruction: str) -> np.ndarray:
        """[1, token_length] ids of ``instruction`` (checked and tokenised when it changes: nothing reaches the
        tokenizer unchecked, whoever calls)."""
        if not isinstance(instruction, str) or instruction != self._instruction:
            self._ids = self.tokenizer(check_instruction(instruction, "observation.instruction"))[None]
            self._instruction = instruction
        return self._ids  # type: ignore[return-value]

    def check(self, obs: Observation) -> CheckedObservation:
        """``obs`` checked against this bundle (views, images, timestamp, proprio, noise, instruction), where it
        enters: :meth:`act`, :meth:`act_batch` and :meth:`preprocess` run the result without checking it again
        (one checked for another bundle is checked afresh). Thread-safe: it changes nothing of the policy."""
        if isinstance(obs, CheckedObservation) and obs.bundle_id == self.manifest.bundle_id:
            return obs
        images = list(obs.images)
        if len(images) > NUM_VIEWS:
            raise InputError(f"observation.images: at most {NUM_VIEWS} views, got {len(images)}")
        extra = [i for i, img in enumerate(images) if i >= self.views and img is not None]
        if extra:
            raise InputError(f"observation.images[{extra[0]}]: this bundle was exported for {self.views} view(s); "
                             f"views {self.views}..{NUM_VIEWS - 1} must be None")
        timestamp = check_timestamp(obs.timestamp)
        images = check_views(images)
        proprio = checked_proprio(obs.proprio, self.state_dim)
        noise = None
        if obs.noise is not None:
            noise = np.asarray(obs.noise, dtype=np.float32)
            if noise.shape not in (self.chunk_shape, self.chunk_shape[1:]):
                raise InputError(f"observation.noise: expected shape {self.chunk_shape[1:]}, got {noise.shape}")
            noise = noise.reshape(self.chunk_shape[1:])
        if not isinstance(obs.instruction, str) or obs.instruction != self._instruction:  # that one was checked
            check_instruction(obs.instruction, "observation.instruction")
        return CheckedObservation(images=images[: self.views], instruction=obs.instruction, proprio=proprio,
                                  timestamp=timestamp, noise=noise, bundle_id=self.manifest.bundle_id)

    def preprocess(self, obs: Observation) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(pixel_values, image_mask, input_ids, proprio, x1) for the backend, after checking ``obs`` (:meth:`check`)."""
        obs = self.check(obs)
        pixels, mask = self.images.pixels(obs.images)
        proprio = obs.proprio
        dim = int(self.manifest.inputs["proprio_dim"])
        if self.state_dim < dim:  # LeRobot's padding of a narrower state to max_state_dim
            proprio = np.concatenate([proprio, np.zeros(dim - self.state_dim, np.float32)])
        if obs.noise is None:
            x1 = self._rng.standard_normal(self.chunk_shape, dtype=np.float32)
        else:
            x1 = obs.noise.reshape(self.chunk_shape)
        return (pixels[None, : self.views], mask[None, : self.views], self.token_ids(obs.instruction),
                proprio[None], x1)

    def domain(self, domain_id: int | None) -> int:
        """The domain a chunk is computed for: ``domain_id``, which the bundle must serve (:class:`UnknownDomain`
        otherwise); None: a robot's bundle's own domain (a server bundle needs one named)."""
        served = self.manifest.domain_ids
        if domain_id is None and not self.manifest.is_server:
            return served[0]
        if domain_id is None:
            raise InputError(f"domain_id: {self.bundle_dir.name} is a server bundle; name one of the domains it "
                             f"serves: {', '.join(map(str, served))}")
        if isinstance(domain_id, bool) or not isinstance(domain_id, (int, np.integer)) or domain_id not in served:
            raise UnknownDomain(f"domain_id = {domain_id!r}: bundle {self.bundle_dir.name} does not serve it; domains "
                                f"served: {', '.join(map(str, served))}")
        return int(domain_id)

    def _steps(self, steps: int | None) -> int:
        steps = self.manifest.default_steps if steps is None else steps
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
            raise InputError(f"steps = {steps!r}: expected an integer 1 ... {MAX_STEPS}")
        return int(steps)

    def checked_prefix(self, prefix: Prefix | None, where: str = "prefix") -> Prefix | None:
        """``prefix`` re-checked against this bundle (:func:`xvla.realtime_chunking.check_prefix`: it may be built
        by hand): rows of the network's width ``action.dim`` in the model's representation, at most
        ``chunk_length`` of them, weights in [0, 1] not increasing. :class:`PrefixUnsupported` when the bundle's
        denoise graph takes none, :class:`InputError` naming ``where`` otherwise; None passes."""
        if prefix is None:
            return None
        if not self.manifest.supports_prefix:
            raise PrefixUnsupported(f"{where}: bundle {self.bundle_dir.name} (id {self.manifest.bundle_id[:12]}) was "
                                    "exported before real-time chunking: its denoise graph takes no prefix. Re-export "
                                    "it (`xvla-edge export`) to continue chunks with a prefix; without one it runs "
                                    "as before")
        if not isinstance(prefix, Prefix):
            raise InputError(f"{where}: expected an xvla.realtime_chunking.Prefix (made by scheduled_prefix or "
                             f"check_prefix), got {type(prefix).__name__}")
        return check_prefix(prefix.rows, prefix.weights, length=self.chunk_shape[1], dim=self.chunk_shape[2],
                            where=where)

    def act(self, obs: Observation, *, steps: int | None = None, domain_id: int | None = None,
            prefix: Prefix | None = None) -> ActionChunk:
        """One action chunk for ``obs`` (``steps`` defaults to the manifest's; ``domain_id``: see :meth:`domain`;
        ``prefix``: real-time chunking's committed prefix, which the chunk continues, see :meth:`checked_prefix`)."""
        steps, domain, prefix = self._steps(steps), self.domain(domain_id), self.checked_prefix(prefix)
        t0 = time.perf_counter()
        return self._run([obs], [self.preprocess(obs)], 1, steps, t0, [domain], [prefix])[0]

    def act_batch(self, observations: Sequence[Observation], *, steps: int | None = None,
                  domain_ids: Sequence[int | None] | int | None = None,
                  prefixes: Sequence[Prefix | None] | None = None) -> list[ActionChunk]:
        """One chunk per observation, computed together: up to the bundle's largest batch size at once (more as
        several batches), as a batch of exactly ``n`` on ONNX Runtime and torch (dynamic shapes), on TensorRT as
        the smallest listed size that holds them (the free rows repeat the last observation; their chunks are
        dropped). Each chunk equals :meth:`act` of its observation with the
        same noise (within the bundle's recorded batch tolerance, ``parity.batch``); ``timings`` are the batch's.
        ``domain_ids``: one per observation, or one for all (a server bundle's batch may mix its domains).
        ``prefixes``: one per observation (None: that chunk without one; see :meth:`checked_prefix`). Every
        observation and prefix is checked before anything runs."""
        steps = self._steps(steps)
        t0 = time.perf_counter()
        if domain_ids is None or isinstance(domain_ids, (int, np.integer)):
            domain_ids = [domain_ids] * len(observations)
        if len(domain_ids) != len(observations):
            raise InputError(f"domain_ids: {len(domain_ids)} for {len(observations)} observations; give one per "
                             "observation, or one for all")
        if prefixes is None:
            prefixes = [None] * len(observations)
        if not isinstance(prefixes, (list, tuple)) or len(prefixes) != len(observations):
            raise InputError(f"prefixes: expected a list of one prefix (or None) per observation "
                             f"({len(observations)}), got {type(prefixes).__name__}"
                             + (f" of {len(prefixes)}" if isinstance(prefixes, (list, tuple)) else ""))
        prefixes = [self.checked_prefix(p, f"prefixes[{i}]") for i, p in enumerate(prefixes)]
        rows, domains = [], []
        for i, (obs, domain_id) in enumerate(zip(observations, domain_ids)):
            try:
                domains.append(self.domain(domain_id))
                rows.append(self.preprocess(obs))
            except InputError as exc:
                raise (UnknownDomain if isinstance(exc, UnknownDomain) else InputError)(f"observations[{i}]: {exc}") \
                    from None
        largest = self.manifest.batch_sizes[-1]
        chunks: list[ActionChunk] = []
        for start in range(0, len(rows), largest):
            part = slice(start, start + largest)
            batch = self.backend.batch_for(len(rows[part]))
            chunks += self._run(list(observations[part]), rows[part], batch, steps, t0, domains[part], prefixes[part])
            t0 = time.perf_counter()
        return chunks

    def _run(self, observations: list[Observation], rows: list[tuple[np.ndarray, ...]], batch: int, steps: int,
             t0: float, domains: list[int], prefixes: list[Prefix | None]) -> list[ActionChunk]:
        """Chunks for ``observations`` (preprocessed: ``rows``; for ``domains``, continuing ``prefixes``, checked)
        run as one batch of ``batch`` rows; ``t0``: when their preprocessing began."""
        rows = rows + [rows[-1]] * (batch - len(rows))
        pixels, mask, ids, proprio, x1 = (np.concatenate(parts) if batch > 1 else parts[0] for parts in zip(*rows))
        domain_ids = np.array(domains + [domains[-1]] * (batch - len(domains)), np.int64)
        committed = {}
        if any(p is not None for p in prefixes):  # padding rows: none
            T, A = self.chunk_shape[1:]
            committed = dict(zip(("prefix", "weights"),
                                 stack_prefixes(prefixes + [None] * (batch - len(prefixes)), length=T, dim=A)))
        t1 = time.perf_counter()
        self.backend.encode(pixels, mask, ids)
        t2 = time.perf_counter()
        actions = np.array(self.backend.denoise(x1, proprio, steps, domain_ids if self.manifest.is_server else None,
                                                **committed)[: len(observations)])
        t3 = time.perf_counter()
        timings = {"preprocess_s": t1 - t0, "encode_s": t2 - t1, "denoise_s": t3 - t2, "total_s": t3 - t0}
        chunks = []
        for a, obs, domain in zip(actions, observations, domains):
            action = self.manifest.action_for(domain)
            chunks.append(ActionChunk(actions=a, arms=decode_arms(a, action), observation_timestamp=obs.timestamp,
                                      timestamps=chunk_timestamps(obs.timestamp, float(action["chunk_seconds"]),
                                                                  a.shape[0]), timings=dict(timings)))
        return chunks

    def act_async(self, obs: Observation, *, steps: int | None = None, domain_id: int | None = None,
                  prefix: Prefix | None = None) -> Future[ActionChunk]:
        """Start :meth:`act` on a worker thread (the backends release the GIL while they compute)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xvla-policy")
        named = {k: v for k, v in (("domain_id", domain_id), ("prefix", prefix)) if v is not None}  # as before
        return self._executor.submit(self.act, obs, steps=steps, **named)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.backend.close()

    def __enter__(self) -> Policy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
