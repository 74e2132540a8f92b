"""The TensorRT backend on NVIDIA GPUs and Jetsons; every TensorRT and CUDA call of the project is here.

- :mod:`.api`: the seam over the TensorRT 10/11 Python API (strongly typed networks, engines, stamps).
- :mod:`.cuda_graph`: streams, device buffers and CUDA-graph capture/replay through cuda-python.
- :mod:`.backend`: :class:`~.backend.TensorRTBackend`, the encoder engine plus the N-step denoise loop
  replayed as one CUDA graph; engine stamps in ``engines/engines.json``.
- :mod:`.build`: building a bundle's engines on the target (``xvla-edge build``).

Importing this package imports neither tensorrt nor cuda-python; they load on first use.
"""
