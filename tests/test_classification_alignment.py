"""Input sizes at which every classification backbone is exactly equivariant, and the authors' network.

Exactly C4-equivariant weights are built by symmetrising every convolution filter over the four
90° rotations; with BatchNorm in eval mode each layer then commutes with rot90 wherever the strided
ops sample a grid centred on the image. At the size training picks for each dataset the pooled
equivariance error must be float rounding; at a misaligned size it must not (the negative control).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from backbones import build_backbone
from backbones.diagnostics import equivariance_errors
from backbones.transforms import group_elements
from data.classification import DEFAULT_IMAGE_SIZE
from training.classification.config import TrainConfig
from training.classification.engine import GroupPoolClassifier, build_classifier, resolve_image_size

MODELS = ("cnnbasic", "authors-cnnbasic", "vgg", "resnet18")
NOMINAL_SIZES = sorted(set(DEFAULT_IMAGE_SIZE.values()))  # 28 (MNIST family), 64 (TinyImageNet), 96 (STL-10)


def symmetrised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights made exactly C4-equivariant: each filter averaged over its four rot90s; random
    BatchNorm statistics; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                w = torch.randn(m.weight.shape, generator=gen) * 0.5
                m.weight.copy_(sum(torch.rot90(w, k, (-2, -1)) for k in range(4)) / 4)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()


def max_error(backbone, size: int) -> float:
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    result = equivariance_errors(backbone, images, group_elements("R4", include_identity=False))
    return max(v for per in result["errors"].values() for v in per.values())


@pytest.mark.parametrize("model", MODELS)
def test_symmetric_weights_are_exactly_equivariant_at_each_datasets_size(model):
    backbone = symmetrised(build_backbone(model, group="R4", width_mult=0.04))
    for nominal in NOMINAL_SIZES:
        size = backbone.aligned_size(nominal)
        assert size >= nominal
        err = max_error(backbone, size)
        assert err < 1e-4, f"{model} at {size} px (dataset size {nominal}): pooled error {err:.3g}"


@pytest.mark.parametrize("model,bad_size", [("resnet18", 64), ("resnet18", 96), ("vgg", 28), ("vgg", 65),
                                            ("authors-cnnbasic", 29), ("cnnbasic", 30)])
def test_misaligned_sizes_break_exact_equivariance(model, bad_size):
    backbone = symmetrised(build_backbone(model, group="R4", width_mult=0.04))
    assert backbone.aligned_size(bad_size) != bad_size
    assert max_error(backbone, bad_size) > 1e-2


def test_training_picks_the_aligned_size_per_model_and_dataset():
    expected = {("resnet18", "rot-tinyimagenet"): 65, ("resnet18", "stl10"): 97, ("resnet18", "rot-mnist"): 33,
                ("vgg", "rot-mnist-built"): 32, ("vgg", "rot-tinyimagenet"): 64, ("cnnbasic", "rot-digits"): 28,
                ("authors-cnnbasic", "rot-mnist"): 28}
    for (model, dataset), size in expected.items():
        cfg = TrainConfig(dataset=dataset, backbone={"name": model, "group": "R4", "width_mult": 0.04})
        assert resolve_image_size(cfg, build_backbone(cfg.backbone)) == size, (model, dataset)
    cfg = TrainConfig(dataset="stl10", image_size=96, backbone={"name": "resnet18", "group": "R4", "width_mult": 0.04})
    assert resolve_image_size(cfg, build_backbone(cfg.backbone)) == 96  # an explicit size is kept


def test_authors_cnnbasic_layout_and_heterogeneous_widths():
    r4 = build_backbone("authors-cnnbasic", group="R4")
    het = build_backbone("authors-cnnbasic", group="R4-2-1")
    assert r4.channel_counts() == [128, 192, 256, 256, 384, 512]
    assert het.channel_counts() == [88, 132, 176, 176, 264, 352]  # 8:2:1, the authors' het-IEN script
    assert 1 - sum(het.channel_counts()) / sum(r4.channel_counts()) == pytest.approx(0.3125)
    kernels = [m.kernel_size[0] for m in r4.modules() if isinstance(m, nn.Conv2d)]
    assert kernels == [7, 5, 5, 5, 5, 5]
    assert any(isinstance(m, nn.ELU) for m in r4.modules()) and not any(isinstance(m, nn.ReLU) for m in r4.modules())
    out = r4(torch.zeros(2, 3, 28, 28))
    assert [f.shape[-1] for f in out.watched] == [24, 24, 12, 12, 6, 2]
    # both pool to 128 features: the head is the same Linear(128,128)-BN1d-ELU-Linear(128,10)
    for backbone in (r4, het):
        clf = GroupPoolClassifier(backbone, 10, "authors", "authors-cnnbasic")
        kinds = [type(m).__name__ for m in clf.fc]
        assert kinds == ["Linear", "BatchNorm1d", "ELU", "Linear"] and clf.fc[0].in_features == 128


def test_authors_defaults_head_init_and_raw_input():
    cfg = TrainConfig(backbone={"name": "authors-cnnbasic", "group": "R4", "width_mult": 0.1})
    assert (cfg.head, cfg.init, cfg.input_norm) == ("authors", "xavier", "unit")
    ours = TrainConfig()
    assert (ours.head, ours.init, ours.input_norm) == ("linear", "default", "standardize")
    torch.manual_seed(0)
    model = build_classifier(cfg, 10)
    linear = model.fc[0]
    assert torch.all(linear.bias == 0.01)
    bound = (6.0 / (linear.in_features + linear.out_features)) ** 0.5  # Xavier-uniform
    assert linear.weight.abs().max() <= bound and linear.weight.abs().max() > 0.8 * bound
    vgg = build_classifier(TrainConfig(head="authors", backbone={"name": "vgg", "group": "R4", "width_mult": 0.05}), 100)
    assert [type(m).__name__ for m in vgg.fc] == ["Linear", "BatchNorm1d", "ELU", "Dropout", "Linear"]
    resnet = build_classifier(TrainConfig(head="authors", backbone={"name": "resnet18", "group": "R4", "width_mult": 0.05}), 100)
    assert isinstance(resnet.fc, nn.Linear)  # their ResNet-18 has a single linear layer


def test_steerable_twin_of_the_authors_network():
    """e2-authors-cnnbasic: the same kernels, widths and feature-map sizes as authors-cnnbasic, exactly
    equivariant at 28 px with random (trained-like) weights, and the authors' head, init and input."""
    from e2cnn import nn as enn

    plain = build_backbone("authors-cnnbasic", group="R4", width_mult=0.125)
    steer = build_backbone("e2-authors-cnnbasic", group="R4", width_mult=0.125).eval()
    assert steer.channel_counts() == plain.channel_counts() == [16, 24, 32, 32, 48, 64]
    assert [m.kernel_size for m in steer.modules() if isinstance(m, enn.R2Conv)] == [7, 5, 5, 5, 5, 5]
    assert any(isinstance(m, enn.ELU) for m in steer.modules())
    with torch.no_grad():
        for m in steer.modules():   # random BatchNorm statistics so that eval mode is not the identity
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    assert [f.shape[-1] for f in steer(torch.zeros(1, 3, 28, 28)).watched] == [24, 24, 12, 12, 6, 2]
    assert max_error(steer, 28) < 1e-4
    cfg = TrainConfig(backbone={"name": "e2-authors-cnnbasic", "group": "R4", "width_mult": 0.125})
    assert (cfg.head, cfg.init, cfg.input_norm) == ("authors", "xavier", "unit")
    assert [type(m).__name__ for m in build_classifier(cfg, 10).fc] == ["Linear", "BatchNorm1d", "ELU", "Linear"]
