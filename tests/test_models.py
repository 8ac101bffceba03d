import pytest
import torch
import torch.nn.functional as F

from backbones.checkpoints import backbone_from_checkpoint
from common.checkpoints import save_atomic
from common.config import ConfigError, from_dict, to_dict
from tracker.anchors import box_iou_matrix, cxcywh_to_xyxy, decode_boxes, encode_boxes, generate_anchors
from tracker.heads import xcorr, xcorr_bank, xcorr_depthwise, xcorr_gemm
from tracker.losses import balanced_bce, rpn_targets, siamfc_labels
from tracker.models import ModelConfig, SiamFCNet, SiamRPNNet, build_model

TINY = {"name": "resnet22", "group": "R8", "width_mult": 0.0625}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(model_type, **kw):
    return build_model({"type": model_type, "backbone": dict(TINY), **kw})


@pytest.mark.parametrize("group", ["R8", "none"])
def test_siamfc_shapes_broadcast_and_paired(group):
    net = build_model({"type": "siamfc", "backbone": {**TINY, "group": group}})
    assert isinstance(net, SiamFCNet) and net.score_size == 17
    z, x = torch.rand(2, 3, 127, 127) * 255, torch.rand(2, 3, 255, 255) * 255
    zf, xf = net.extract(z), net.extract(x)
    assert zf.out.shape[-2:] == (5, 5) and xf.out.shape[-2:] == (21, 21)
    assert len(zf.watched) == len(net.backbone.watched_names)
    assert net.head(zf.out[:1], xf.out).shape == (2, 1, 17, 17)
    paired = net.head(zf.out, xf.out)
    assert paired.shape == (2, 1, 17, 17)
    # pairing is one to one: row 1 equals template 1 against search 1 alone
    assert torch.allclose(paired[1:], net.head(zf.out[1:], xf.out[1:]), atol=1e-5)
    assert net(z, x).shape == (2, 1, 17, 17)
    bank = net.head_bank(zf.out, xf.out)
    assert bank.shape == (2, 2, 17, 17)
    assert torch.allclose(bank[:, :1], net.head(zf.out[:1], xf.out), atol=1e-5)


def test_siamrpn_shapes_anchors_and_prepared_template():
    net = tiny("siamrpn", neck_channels=16)
    assert isinstance(net, SiamRPNNet) and net.feature_channels == 16
    net.eval()
    z, x = torch.rand(1, 3, 127, 127) * 255, torch.rand(3, 3, 255, 255) * 255
    zf, xf = net.extract(z).out, net.extract(x).out
    assert zf.shape[1] == 16
    cls, loc = net.head(zf, xf)
    assert cls.shape == (3, 10, 17, 17) and loc.shape == (3, 20, 17, 17)
    cls2, loc2 = net.head_prepared(net.prepare_template(zf), xf)
    assert torch.allclose(cls, cls2) and torch.allclose(loc, loc2)
    anchors = net.anchors()
    assert anchors.shape == (5 * 17 * 17, 4)
    # (anchor, row, col) order; the middle cell of each anchor sits at the crop centre
    grid = anchors.view(5, 17, 17, 4)
    assert torch.allclose(grid[:, 8, 8, :2], torch.full((5, 2), 127.5))
    assert torch.allclose(grid[0, 0, 1, :2] - grid[0, 0, 0, :2], torch.tensor([8.0, 0.0]))
    assert torch.allclose(grid[0, 1, 0, :2] - grid[0, 0, 0, :2], torch.tensor([0.0, 8.0]))
    ratios = grid[:, 0, 0, 3] / grid[:, 0, 0, 2]
    assert torch.allclose(ratios, torch.tensor([0.33, 0.5, 1.0, 2.0, 3.0]), rtol=0.1)


def test_small_backbone_and_sizes():
    net = build_model({"type": "siamfc", "backbone": {"name": "cnnbasic", "group": "R4", "width_mult": 0.125},
                       "exemplar_size": 32, "instance_size": 64})
    assert net.score_size == 9
    out = net(torch.rand(1, 3, 32, 32) * 255, torch.rand(2, 3, 64, 64) * 255)
    assert out.shape == (2, 1, 9, 9)


def test_correlation_matches_direct_sum():
    z, x = torch.randn(1, 4, 2, 2), torch.randn(2, 4, 5, 5)
    expected = (z[0] * x[1, :, 1:3, 2:4]).sum()
    assert torch.allclose(xcorr(z, x)[1, 0, 1, 2], expected, atol=1e-5)
    dw = xcorr_depthwise(z, x)
    assert dw.shape == (2, 4, 4, 4)
    assert torch.allclose(dw.sum(1), xcorr(z, x)[:, 0], atol=1e-5)
    with pytest.raises(ValueError, match="batch"):
        xcorr(torch.randn(2, 4, 2, 2), torch.randn(3, 4, 5, 5))


@pytest.mark.parametrize("z_shape, x_shape", [((1, 8, 5, 5), (3, 8, 22, 22)), ((1, 3, 2, 4), (2, 3, 7, 6)),
                                               ((1, 4, 3, 3), (1, 4, 3, 3))])
def test_gemm_correlation_equals_conv2d(z_shape, x_shape):
    """The fast backends' correlation (a GEMM and a shifted sum) is conv2d's, non-square maps and
    kernels included, for one template and for a bank, and its gradients are conv2d's too."""
    torch.manual_seed(0)
    z = torch.randn(z_shape, dtype=torch.float64, requires_grad=True)
    x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)
    out, expected = xcorr_gemm(z, x), F.conv2d(x, z)
    assert out.shape == expected.shape
    assert torch.allclose(out, expected, atol=1e-10)
    grads = torch.autograd.grad((out * expected.detach()).sum(), (z, x))
    expected_grads = torch.autograd.grad((expected * expected.detach()).sum(), (z, x))
    for g, e in zip(grads, expected_grads):
        assert torch.allclose(g, e, atol=1e-10)
    bank = torch.randn(3, *z_shape[1:], dtype=torch.float64)
    assert torch.allclose(xcorr_gemm(bank, x.detach()), xcorr_bank(bank, x.detach()), atol=1e-10)
    with pytest.raises(ValueError, match="larger"):
        xcorr_gemm(torch.randn(1, z_shape[1], x_shape[2] + 1, 1), x.detach())


def test_siamfc_labels_follow_the_box_centre():
    centred = torch.tensor([[100.0, 100.0, 155.0, 155.0]])     # centre 127.5 = crop centre
    labels = siamfc_labels(centred, 17, 8, 255, r_pos=16)
    assert labels.shape == (1, 1, 17, 17)
    assert labels[0, 0, 8, 8] == 1 and labels.sum() == 13        # radius 2 cells: 13 cells
    shifted = siamfc_labels(centred + torch.tensor([16.0, 0.0, 16.0, 0.0]), 17, 8, 255, r_pos=16)
    assert shifted[0, 0, 8, 10] == 1 and shifted[0, 0, 8, 6] == 0
    assert torch.equal(shifted[0, 0, :, 2:], labels[0, 0, :, :-2])
    # a good response beats a bad one; a map without positives still gives a finite loss
    good = labels * 10 - 5
    assert balanced_bce(good, labels) < balanced_bce(-good, labels)
    assert torch.isfinite(balanced_bce(torch.zeros(1, 1, 17, 17), torch.zeros(1, 1, 17, 17)))


def test_rpn_targets_and_box_coding():
    anchors = generate_anchors(17, 8, (0.33, 0.5, 1.0, 2.0, 3.0), (8.0,), 255)
    boxes = torch.tensor([[95.0, 95.0, 160.0, 160.0], [60.0, 100.0, 100.0, 180.0]])
    labels, deltas = rpn_targets(anchors, boxes, generator=torch.Generator().manual_seed(0))
    iou = box_iou_matrix(boxes, cxcywh_to_xyxy(anchors))
    for b in range(2):
        pos, neg = labels[b] == 1, labels[b] == 0
        assert 0 < pos.sum() <= 16 and neg.sum() == 48
        assert (iou[b][pos] > 0.6).all() and (iou[b][neg] < 0.3).all()
    decoded = decode_boxes(deltas, anchors[None])
    assert torch.allclose(cxcywh_to_xyxy(decoded), boxes[:, None].expand(-1, anchors.shape[0], -1), atol=1e-3)
    assert torch.allclose(encode_boxes(anchors, anchors), torch.zeros_like(anchors), atol=1e-6)


@pytest.mark.parametrize("model_type, parts", [("siamfc", {"total", "cls"}), ("siamrpn", {"total", "cls", "reg"})])
def test_losses_train_a_pair(model_type, parts):
    net = tiny(model_type)
    z, x = torch.rand(2, 3, 127, 127) * 255, torch.rand(2, 3, 255, 255) * 255
    box = torch.tensor([[96.0, 100.0, 160.0, 150.0], [100.0, 90.0, 150.0, 170.0]])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    values = []
    for _ in range(6):
        losses = net.losses(net.extract(z).out, net.extract(x).out, box, generator=torch.Generator().manual_seed(0))
        assert set(losses) == parts and all(torch.isfinite(v) for v in losses.values())
        opt.zero_grad()
        losses["total"].backward()
        assert net.backbone.stem[0].weight.grad.abs().sum() > 0
        opt.step()
        values.append(float(losses["total"].detach()))
    assert values[-1] < values[0]


def test_config_is_strict_and_round_trips(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*'out_scal'"):
        build_model({"type": "siamfc", "out_scal": 0.1})
    with pytest.raises(ConfigError, match="unknown model type"):
        build_model({"type": "siamxx"})
    with pytest.raises(ConfigError, match="unknown key"):
        build_model({"backbone": {"nam": "resnet22"}})
    with pytest.raises(ConfigError, match="exemplar_size"):
        ModelConfig(exemplar_size=300)
    cfg = from_dict(ModelConfig, {"type": "siamrpn", "anchor_ratios": [0.5, 1, 2], "backbone": TINY}, "model")
    assert cfg.anchor_ratios == (0.5, 1.0, 2.0)
    assert from_dict(ModelConfig, to_dict(cfg), "model") == cfg
    net = build_model(cfg)
    state = net.state_dict()
    assert not any("pixel_" in k or "anchor_boxes" in k for k in state)
    path = tmp_path / "m.pth"
    save_atomic({"config": {"model": to_dict(cfg), "train": {}}, "model": state}, path)
    backbone, _ = backbone_from_checkpoint(path)
    assert torch.equal(backbone.stem[0].weight, net.backbone.stem[0].weight)


@pytest.mark.parametrize("model_type", ["siamfc", "siamrpn"])
def test_pool_groups_heads_see_the_group_max_pool(model_type):
    from backbones import group_max_pool

    torch.manual_seed(0)
    net = tiny(model_type, pool_groups=True)
    spec = net.backbone.spec
    assert net.feature_channels == net.backbone.out_channels // 8
    z = torch.rand(1, 3, 127, 127) * 255
    net.eval()
    with torch.no_grad():
        out = net.extract(z).out
        raw = net.backbone((z - net.pixel_mean) / net.pixel_std).out
    assert torch.equal(out, group_max_pool(raw, spec))
    assert net.score_size == 17
    with pytest.raises(ConfigError, match="neck_channels"):
        tiny(model_type, pool_groups=True, neck_channels=8)
    with pytest.raises(ConfigError, match="pool_groups"):
        tiny(model_type, pool_groups="yes")
