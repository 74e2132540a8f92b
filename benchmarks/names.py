"""The names the latency benchmarks are selected and reported by (standard library only).

Shared by the suites, their harness and conftest, the results writer and the ``xvla-edge bench`` parser, which
imports this module when ``xvla-edge --help`` builds every command's parser.
"""

from __future__ import annotations

SIZES = ("tiny", "small", "full")  # the named sizes of xvla.sizes, smallest first
DEFAULT_SIZES = ("tiny", "small")  # what runs unless sizes are chosen (full takes minutes per backend)
BACKENDS = ("onnxruntime-fp32", "onnxruntime-fp16", "torch-fp32", "official-fp32")
REFERENCE = BACKENDS[0]  # the backend other chunks are compared with
FLOOR_STAGES = ("encoder", "step", "chunk")  # the network's stages, with floors on the deployment targets
STAGES = (*FLOOR_STAGES, "act")  # act: a chunk with the preprocessing of Policy.act
