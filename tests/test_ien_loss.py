import math

import pytest
import torch

from backbones import (
    BatchTransform,
    GroupElement,
    IENLoss,
    build_backbone,
    double_batch,
    group_elements,
    sample_transform,
)
from backbones.transforms import _warp


def test_rot90_and_flip_round_trip_exactly():
    x = torch.randn(6, 3, 7, 7)
    elems = [GroupElement(90 * (i % 4), f) for i, f in enumerate([None, "h", "v", None, "h", "v"])]
    t = BatchTransform(elems)
    assert t.is_exact and t.valid_mask(7, 7) is None
    assert torch.equal(t.invert(t.apply(x)), x)
    assert torch.equal(t.apply(x)[1], torch.flip(torch.rot90(x[1], 1, (-2, -1)), (-1,)))


def test_rotation_is_counter_clockwise_and_grid_path_agrees_with_rot90():
    img = torch.zeros(1, 1, 9, 9)
    img[0, 0, 0, 8] = 1.0  # top-right corner
    rotated = BatchTransform([GroupElement(90.0)]).apply(img)
    assert rotated[0, 0, 0, 0] == 1.0  # CCW on screen: top-right -> top-left
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(_warp(x, 90.0 + 1e-7, 1.0), torch.rot90(x, 1, (-2, -1)), atol=1e-4)


def test_45_degree_rotation_round_trip_inside_the_disc():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 33), torch.linspace(-1, 1, 33), indexing="ij")
    x = torch.stack([torch.sin(3 * xx) + yy, torch.cos(2 * yy) * xx])[None]  # smooth content
    t = BatchTransform([GroupElement(45.0)])
    back = t.invert(t.apply(x))
    mask = t.valid_mask(33, 33)
    inner = mask * (xx**2 + yy**2 < 0.6)[None, None]
    assert ((back - x).abs() * inner).max() < 0.1
    assert 0.6 < mask.mean() < 0.85  # about pi/4 of the square


def test_sampled_transforms_exclude_identity_and_cover_the_group():
    g = torch.Generator().manual_seed(0)
    t = sample_transform("R4R", 500, generator=g)
    seen = {(e.angle, e.flip) for e in t.elements}
    assert (0.0, None) not in seen
    assert len(seen) == 11  # 4 rotations x {none, h, v} minus identity
    assert {e.angle for e in sample_transform("R8", 200, generator=g).elements} == {45.0 * k for k in range(1, 8)}
    scales = [e.scale for e in sample_transform("R4", 100, generator=g, scales=(0.5, 2.0)).elements]
    assert min(scales) >= 0.5 and max(scales) <= 2.0
    assert len(group_elements("R4R")) == 8


def _e2(group="R4"):
    return build_backbone("e2-cnnbasic", group=group, width_mult=0.125).eval()


def test_loss_is_zero_for_an_exactly_equivariant_network():
    net = _e2("R4")
    x = torch.randn(3, 3, 32, 32)
    xx, t = double_batch(x, "R4", generator=torch.Generator().manual_seed(1))
    out = IENLoss("R4", beta=1.0)(net(xx).watched, t)
    assert out.per_layer.shape == (6,)
    assert out.total.item() < 1e-9


def test_loss_is_positive_for_a_random_cnn_and_gradients_flow():
    net = build_backbone("cnnbasic", group="R4", width_mult=0.125)
    x = torch.randn(3, 3, 32, 32)
    xx, t = double_batch(x, "R4", generator=torch.Generator().manual_seed(1))
    out = IENLoss("R4", beta=2.0)(net(xx).watched, t)
    assert out.total.item() > 1e-3
    assert math.isclose(out.total.item(), 2.0 * out.per_layer.sum().item(), rel_tol=1e-5)
    out.total.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert net.convs[0][0].weight.grad.abs().sum() > 0


def test_training_on_the_loss_lowers_it():
    torch.manual_seed(0)
    net = build_backbone("cnnbasic", group="R8", width_mult=0.125)
    loss_fn = IENLoss("R8", beta=1.0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 24, 24)
    losses = []
    for _ in range(25):
        xx, t = double_batch(x, "R8", generator=gen)
        loss = loss_fn(net(xx).watched, t).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])


def test_layer_weights_and_bad_arguments():
    net = build_backbone("resnet22", group="R4", width_mult=0.0625)
    xx, t = double_batch(torch.randn(1, 3, 127, 127), "R4")
    watched = net(xx).watched
    weighted = IENLoss("R4", beta=1.0, layer_weights=[0, 0, 1])(watched, t)
    assert torch.isclose(weighted.total, weighted.per_layer[2])
    with pytest.raises(ValueError, match="3 watched layers"):
        IENLoss("R4", layer_weights=[1, 1])(watched, t)
    with pytest.raises(ValueError, match="doubled batch"):
        IENLoss("R4")([w[:1] for w in watched], t)
    with pytest.raises(ValueError, match="beta=0"):
        IENLoss("none", beta=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        IENLoss("R4", beta=-1)


def test_valid_masks_for_scales_in_both_frames():
    t = BatchTransform([GroupElement(scale=2.0), GroupElement(scale=0.5), GroupElement(90.0)])
    src, tgt = t.valid_mask(8, 8), t.valid_mask(8, 8, frame="target")
    assert src[0].mean() == 0.25 and src[1].mean() == 1.0 and src[2].mean() == 1.0
    assert tgt[0].mean() == 1.0 and tgt[1].mean() == 0.25
    with pytest.raises(ValueError, match="frame"):
        t.valid_mask(8, 8, frame="other")


def test_channel_counts_of_steerable_backbones():
    e2 = build_backbone("e2-cnnbasic", group="R8", width_mult=0.125)
    plain = build_backbone("cnnbasic", group="R8", width_mult=0.125)
    assert e2.channel_counts() == plain.channel_counts()
