import pytest
import torch

from backbones import GroupSpecError, group_max_pool, layer_channels, parse_group


@pytest.mark.parametrize(
    "text, sizes, ratios, rotations, flips",
    [
        ("R4", (4,), (1,), 4, False),
        ("r8", (8,), (1,), 8, False),
        ("R16", (16,), (1,), 16, False),
        ("R4R", (8,), (1,), 4, True),
        ("R8-4-2-1", (8, 4, 2, 1), (32, 8, 2, 1), 8, False),
        ("R8-4-2", (8, 4, 2), (8, 2, 1), 8, False),
        ("R4-2-1", (4, 2, 1), (8, 2, 1), 4, False),
        ("R8-4:3,1", (8, 4), (3, 1), 8, False),
        ("none", (1,), (1,), 1, False),
    ],
)
def test_parse(text, sizes, ratios, rotations, flips):
    spec = parse_group(text)
    assert (spec.sizes, spec.ratios, spec.rotations, spec.flips) == (sizes, ratios, rotations, flips)


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("R3", "powers of two"),
        ("R8-2-4", "strictly decrease"),
        ("R8-4-2-1:1,2", "one positive ratio"),
        ("R16-4", "no known channel ratios"),
        ("R8R", "only R4R"),
        ("X8", "malformed group spec"),
        ("R8--4", "malformed group spec"),
        (8, "must be a string"),
    ],
)
def test_malformed_specs_raise_clear_errors(bad, fragment):
    with pytest.raises(GroupSpecError, match=fragment):
        parse_group(bad)


def test_split_rejects_channels_that_do_not_fit():
    with pytest.raises(GroupSpecError, match="multiple of 43"):
        parse_group("R8-4-2-1").split(100)
    with pytest.raises(GroupSpecError, match="multiple of 8"):
        parse_group("R8").split(12)


def test_homogeneous_pooling_takes_max_of_consecutive_channels():
    x = torch.arange(2 * 8 * 3 * 3, dtype=torch.float32).view(2, 8, 3, 3)
    pooled = group_max_pool(x, "R4")
    assert pooled.shape == (2, 2, 3, 3)
    assert torch.equal(pooled[:, 0], x[:, 3])
    assert torch.equal(pooled[:, 1], x[:, 7])


def test_heterogeneous_pooling_shapes_and_values():
    spec = parse_group("R8-4-2-1")
    x = torch.randn(3, 129, 5, 5)  # 96 + 24 + 6 + 3 channels
    pooled = group_max_pool(x, spec)
    assert [c for c, _ in spec.split(129)] == [96, 24, 6, 3]
    assert pooled.shape == (3, 12 + 6 + 3 + 3, 5, 5)
    assert torch.equal(pooled[:, 0], x[:, 0:8].amax(1))
    assert torch.equal(pooled[:, 12], x[:, 96:100].amax(1))
    assert torch.equal(pooled[:, 18], x[:, 120:122].amax(1))
    assert torch.equal(pooled[:, -1], x[:, -1])
    assert group_max_pool(torch.randn(1, 99, 2, 2), "R4-2-1").shape == (1, 18 + 9 + 9, 2, 2)


def test_plain_pooling_is_identity():
    x = torch.randn(1, 5, 2, 2)
    assert group_max_pool(x, "none") is x


def test_channel_counts_match_the_paper():
    """VGG/ResNet-18 first-layer widths of the IEN paper; heterogeneous twins >30% narrower."""
    vgg = lambda g: layer_channels(parse_group(g), 200, 144)  # noqa: E731
    res = lambda g: layer_channels(parse_group(g), 192, 136)  # noqa: E731
    assert (vgg("R4"), vgg("R8"), vgg("R4R"), vgg("R4-2-1"), vgg("R8-4-2-1")) == (144, 200, 200, 99, 129)
    assert (res("R4"), res("R8"), res("R4R"), res("R4-2-1"), res("R8-4-2-1")) == (136, 192, 192, 88, 129)
    assert 1 - res("R8-4-2-1") / res("R8") > 0.30
