"""The benchmarks' FLOP and weight counter against independent references on the tiny model.

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on the bundle graphs' torch modules (it counts matmul,
convolution and attention products, as the counter does). Its CPU attention kernel is not in the flop
registry, so attention runs on the math backend here. Weights: the parameter counts of the modules each
graph runs.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks import floor  # noqa: E402
from export.graphs import DenoiseStepGraph, EncoderGraph  # noqa: E402
from xvla.model import XVLA  # noqa: E402
from xvla.sizes import size_config  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    cfg, image_size = size_config("tiny")
    torch.manual_seed(0)
    return XVLA(cfg).eval(), image_size


def counted_flops(module: torch.nn.Module, *args: torch.Tensor) -> tuple[int, tuple[torch.Tensor, ...]]:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = module(*args)
    return counter.get_total_flops(), out


@pytest.mark.parametrize("views", [1, 3])
def test_encoder_work_matches_flop_counter_and_parameters(tiny, views: int) -> None:
    model, s = tiny
    cfg = model.config
    args = (torch.randn(1, views, 3, s, s), torch.ones(1, views, dtype=torch.bool),
            torch.randint(3, cfg.text.vocab_size, (1, cfg.text_tokens)))
    flops, _ = counted_flops(EncoderGraph(model, views), *args)
    work = floor.encoder_work(cfg, floor.Shapes(s, views=views, text_tokens=cfg.text_tokens))
    assert work.flops == flops
    vlm, head = model.vlm, model.transformer
    projector = vlm.multi_modal_projector
    modules = [vlm.vision_tower, projector.image_projection, projector.image_proj_norm, vlm.language_encoder.layers,
               vlm.language_encoder.layernorm_embedding, head.vlm_proj, head.aux_visual_proj]
    assert work.weight_bytes == 4 * sum(p.numel() for m in modules for p in m.parameters())


def test_step_work_matches_flop_counter_and_graph_weights(tiny) -> None:
    model, s = tiny
    cfg = model.config
    shapes = floor.Shapes(s, text_tokens=cfg.text_tokens)
    vlm, aux = floor.context_tokens(cfg, shapes)
    step = DenoiseStepGraph(model, domain_id=0)
    T, A = cfg.num_actions, cfg.dim_action
    flops, _ = counted_flops(step, torch.randn(1, vlm + aux, cfg.hidden_size), torch.randn(1, T, A),
                             torch.randn(1, T, A), torch.randn(1, A), torch.tensor([0.5]))
    work = floor.step_work(cfg, shapes)
    assert work.flops == flops
    assert floor.step_sequence(cfg, shapes) == T + vlm + aux + cfg.len_soft_prompts
    weights = sum(v.numel() for k, v in step.state_dict().items() if k not in ("keep", "keep_proprio"))  # masks
    assert work.weight_bytes == 4 * weights
    fp16 = floor.Shapes(s, text_tokens=cfg.text_tokens, precision="fp16")
    assert floor.step_work(cfg, fp16).weight_bytes == 2 * weights


def test_floor_is_the_roofline_and_a_chunk_adds_steps() -> None:
    m = floor.Machine("m", flops_per_s=1e9, bytes_per_s=1e8, source="test")
    assert m.floor(floor.Work(flops=2e9, weight_bytes=1e8)) == 2.0  # compute-bound
    assert m.floor(floor.Work(flops=1e9, weight_bytes=5e8)) == 5.0  # memory-bound
    cfg, s = size_config("tiny")
    shapes = floor.Shapes(s)
    f = floor.stage_floors(cfg, shapes, m, steps=7)
    assert f["chunk"] == pytest.approx(f["encoder"] + 7 * f["step"])
    assert f["step"] == m.floor(floor.step_work(cfg, shapes))
