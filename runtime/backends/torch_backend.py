"""The reference backend: the PyTorch model of the bundle's source checkpoint, with the LoRA adapter merged at
export merged again (debugging and parity).

Eager on CPU and GPU. On CUDA, ``cuda_graph=True`` captures the whole N-step loop in one
``torch.cuda.CUDAGraph`` per step count, as PyTorch documents whole-network capture: static input buffers,
warm-up on a side stream, a device synchronisation, capture, then copy-in and replay per chunk. Everything the
captured loop runs is a device operation on tensors made before capture (the step times per step count, the
action space's masks) — no tensor from host data, no scalar read back — so nothing inside it copies to or
waits for the host. A bundle that supports real-time chunking gets two more static buffers, the prefix rows and
weights, mixed into every step's prediction as the reference sampler does (:func:`xvla.model.mix_prefix`; zeros
when a chunk has none). If capture fails anyway, the backend runs the eager loop from then on (logged once, the
reason in :attr:`TorchBackend.graph_fallback`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from runtime.backends.base import Backend, BackendError
from runtime.manifest import Manifest
from xvla.checkpoint import load_checkpoint
from xvla.lora import LoraAdapter, read_adapter
from xvla.model import mix_prefix

log = logging.getLogger(__name__)


def bundle_adapter(manifest: Manifest, bundle_dir: str | Path, lora: str | Path | None) -> LoraAdapter | None:
    """The LoRA adapter the bundle was exported with (``source.lora``; ``lora`` overrides its path), its files
    checked against the manifest's record; None when none was merged."""
    record = manifest.raw.get("source", {}).get("lora")
    if record is None:
        if lora is not None:
            raise BackendError(f"lora={lora}: {bundle_dir} was exported without a LoRA adapter")
        return None
    path = Path(lora or record["path"])
    if not path.is_dir():
        raise BackendError(f"torch backend needs the LoRA adapter the bundle was exported with; {path} is not a "
                           "directory (pass lora=PATH)")
    adapter = read_adapter(path)
    adapter.check_record(record, f"{bundle_dir}/manifest.json source.lora")
    return adapter


class TorchBackend(Backend):
    name = "torch"
    any_batch = True

    def __init__(self, manifest: Manifest, bundle_dir: str | Path, *, device: str = "cpu",
                 checkpoint: str | Path | None = None, lora: str | Path | None = None, dtype: str = "float32",
                 cuda_graph: bool = False) -> None:
        super().__init__(manifest)
        ckpt = Path(checkpoint or manifest.raw["source"]["checkpoint"])
        if not ckpt.is_dir():
            raise BackendError(f"torch backend needs the bundle's source checkpoint; {ckpt} is not a directory "
                               "(pass checkpoint=PATH)")
        adapter = bundle_adapter(manifest, bundle_dir, lora)
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendError("device 'cuda' requested but torch has no CUDA device")
        if cuda_graph and device != "cuda":
            raise BackendError("cuda_graph=True needs device='cuda'")
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.model = load_checkpoint(ckpt, lora=adapter, device=self.device, dtype=self.dtype)
        self.use_graph = cuda_graph
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.times: dict[int, torch.Tensor] = {}  # step count → [steps, 1] times 1, (steps-1)/steps, ...
        self.enc: tuple[torch.Tensor, torch.Tensor] | None = None
        self._buffers(1)

    def _buffers(self, batch: int) -> None:
        """The loop's static input buffers for ``batch`` observations."""
        T, A = int(self.manifest.action["chunk_length"]), int(self.manifest.action["dim"])
        P = int(self.manifest.inputs["proprio_dim"])
        self.x1 = torch.zeros(batch, T, A, device=self.device, dtype=self.dtype)
        self.proprio = torch.zeros(batch, P, device=self.device, dtype=self.dtype)
        folded = self.manifest.domain_ids[0]  # a server bundle's rows are set per chunk
        self.domain = torch.full((batch,), folded, dtype=torch.long, device=self.device)
        self.prefix = self.weights = None
        if self.manifest.supports_prefix:  # zeros: no prefix
            self.prefix = torch.zeros(batch, T, A, device=self.device, dtype=self.dtype)
            self.weights = torch.zeros(batch, T, device=self.device, dtype=self.dtype)

    def encode(self, pixel_values: np.ndarray, image_mask: np.ndarray, input_ids: np.ndarray) -> None:
        B, V, slots = pixel_values.shape[0], pixel_values.shape[1], self.model.config.view_slots
        self.check_batch(B)
        px = torch.zeros(B, slots, *pixel_values.shape[2:], dtype=self.dtype, device=self.device)
        px[:, :V] = torch.from_numpy(pixel_values).to(self.device, self.dtype)
        mask = torch.zeros(B, slots, dtype=torch.bool, device=self.device)
        mask[:, :V] = torch.from_numpy(image_mask).to(self.device)
        enc = self.model.encode(torch.from_numpy(input_ids).to(self.device), px, mask)
        if self.enc is None or self.enc[0].shape != enc[0].shape:
            self.enc = (enc[0].clone(), enc[1].clone())
            self._buffers(B)
            self.graphs.clear()  # captured graphs read the old buffers
        else:  # keep the addresses a captured graph reads
            self.enc[0].copy_(enc[0])
            self.enc[1].copy_(enc[1])

    def _times(self, steps: int) -> torch.Tensor:
        if steps not in self.times:
            self.times[steps] = torch.tensor([[i / steps] for i in range(steps, 0, -1)], device=self.device,
                                             dtype=self.dtype)
        return self.times[steps]

    @torch.no_grad()
    def _loop(self, steps: int) -> torch.Tensor:
        """The N-step sampler on the static buffers (device operations only once :meth:`_times` exists)."""
        times = self._times(steps)
        a = torch.zeros_like(self.x1)
        for k in range(steps):
            t = times[k]
            a = self.model.denoise_step(self.enc, self.x1 * t + a * (1 - t), self.proprio, t, self.domain)
            if self.prefix is not None:
                a = mix_prefix(a, self.prefix, self.weights)
        return self.model.action_space.postprocess(a)

    def _graphed(self, steps: int) -> torch.Tensor:
        if self.graph_fallback is not None:
            return self._loop(steps)
        if steps not in self.graphs:
            try:
                self.graphs[steps] = self._capture(steps)
            except RuntimeError as exc:
                torch.cuda.synchronize()
                self.graph_fallback = f"capture of the {steps}-step loop failed: {type(exc).__name__}: {exc}"
                log.warning("torch backend: %s; running without CUDA graphs from now on", self.graph_fallback)
                return self._loop(steps)
        graph, out = self.graphs[steps]
        graph.replay()
        return out

    def _capture(self, steps: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside capture (allocator, kernels' lazy init, cached masks and times)
                self._loop(steps)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._loop(steps)
        return graph, out

    def denoise(self, x1: np.ndarray, proprio: np.ndarray, steps: int, domain_ids: np.ndarray | None = None,
                prefix: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
        if self.enc is None:
            raise BackendError("denoise() called before encode()")
        if x1.shape[0] != self.x1.shape[0]:
            raise BackendError(f"denoise() of a batch of {x1.shape[0]} after encode() of {self.x1.shape[0]}")
        self.check_domains(domain_ids, x1.shape[0])
        self.check_prefix(prefix, weights, x1.shape[0])
        self.x1.copy_(torch.from_numpy(x1))
        self.proprio.copy_(torch.from_numpy(proprio))
        if domain_ids is not None:  # a server bundle: the checkpoint holds every domain's rows
            self.domain.copy_(torch.from_numpy(np.asarray(domain_ids, np.int64)))
        if self.prefix is not None:  # the captured loop reads these buffers: written in place
            if prefix is None:
                self.prefix.zero_()
                self.weights.zero_()
            else:
                self.prefix.copy_(torch.from_numpy(prefix))
                self.weights.copy_(torch.from_numpy(weights))
        out = self._graphed(steps) if self.use_graph else self._loop(steps)
        return out.float().cpu().numpy()
