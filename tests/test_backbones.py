import pytest
import torch

from backbones import BackboneConfig, GroupSpecError, build_backbone
from common.config import ConfigError, from_dict


@pytest.mark.parametrize(
    "name, group, size, out_hw",
    [
        ("cnnbasic", "R4", 28, 7),
        ("cnnbasic", "R8-4-2-1", 28, 7),
        ("vgg", "R4R", 32, 2),
        ("vgg", "R4-2-1", 32, 2),
        ("resnet18", "R8", 33, 5),
        ("resnet18", "none", 33, 5),
        ("resnet22", "R8", 127, 5),
        ("resnet22", "R4", 255, 21),
        ("e2-cnnbasic", "R8", 28, 7),
        ("e2-resnet22", "R4", 127, 5),
    ],
)
def test_output_and_watched_shapes_on_tiny_inputs(name, group, size, out_hw):
    net = build_backbone(name, group=group, width_mult=0.0625)
    res = net(torch.randn(2, 3, size, size))
    assert res.out.shape == (2, net.out_channels, out_hw, out_hw)
    assert len(res.watched) == len(net.watched_names)
    for f in res.watched:
        assert f.shape[0] == 2 and f.shape[1] % net.spec.channel_unit == 0


def test_heterogeneous_backbone_is_over_30_percent_narrower():
    homo = build_backbone("resnet18", group="R8")
    hetero = build_backbone("resnet18", group="R8-4-2-1")
    assert homo.channel_counts()[0] == 192 and hetero.channel_counts()[0] == 129
    assert sum(hetero.channel_counts()) < 0.7 * sum(homo.channel_counts())


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="unknown key.*'widht_mult'.*did you mean 'width_mult'"):
        from_dict(BackboneConfig, {"name": "vgg", "widht_mult": 0.5})
    with pytest.raises(ConfigError, match="unknown backbone 'resnet50'"):
        BackboneConfig(name="resnet50")
    with pytest.raises(GroupSpecError):
        build_backbone("vgg", group="R5")
    with pytest.raises(GroupSpecError, match="rotation group C_N"):
        build_backbone("e2-resnet22", group="R8-4-2-1")


def test_building_an_e2cnn_backbone_warns_nothing(monkeypatch):
    """e2cnn's torch deprecation warning (uint8 mask indexing) is silenced where the basis is built."""
    import warnings

    from e2cnn.nn.modules.r2_conv import basisexpansion_singleblock

    monkeypatch.setattr(basisexpansion_singleblock, "_stored_filters", {})   # force the basis expansion
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_backbone("e2-resnet22", group="R4", width_mult=0.0625)
    # the filter is scoped: it does not leak into the caller's warning settings
    with pytest.warns(UserWarning, match="uint8"):
        monkeypatch.setattr(basisexpansion_singleblock, "_stored_filters", {})
        from backbones.steerable import E2ResNet22
        E2ResNet22(group="R4", width_mult=0.0625)
