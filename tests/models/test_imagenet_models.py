"""The ImageNet networks of paper Sec. 3.4 / Table 1: exact sizes, torchvision's layout and outputs, where a
downsampling bottleneck puts its stride, Table 1's multiply-adds, option A/B/C shortcuts, plain twins."""

from __future__ import annotations

import operator
import re

import pytest
import torch
import torch.fx
import torchvision

from resnet_core import ConfigError, count_parameters, create_model, list_models, model_info
from resnet_core.models import (
    BasicBlock,
    Bottleneck,
    ImageNetResNet,
    Shortcut,
    StrideIn,
    ZeroPadShortcut,
    describe,
    imagenet_resnet,
    multiply_adds,
)
from resnet_core.models.imagenet import TABLE_1

DEPTHS = (18, 34, 50, 101, 152)
BOTTLENECK_DEPTHS = (50, 101, 152)
# Trainable parameters with option B and 1000 classes: torchvision's counts, whichever the stride placement.
EXACT_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
TABLE_1_MULTIPLY_ADDS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}  # x10^9
WIDTHS = (64, 128, 256, 512)


def _meta(name: str, **overrides: object) -> torch.nn.Module:
    """A registered model built on the meta device: shapes only, no memory, instant even for ResNet-152."""
    with torch.device("meta"):
        return create_model(name, **overrides)


def _placements(depth: int) -> list[dict[str, str]]:
    return [{"stride_in": "1x1"}, {"stride_in": "3x3"}] if depth in BOTTLENECK_DEPTHS else [{}]


def _projection(in_channels: int, out_channels: int) -> int:
    """Parameters of a 1x1 projection (Eqn. 2) and its BN (weight and bias)."""
    return in_channels * out_channels + 2 * out_channels


def _option_b_projections(depth: int) -> int:
    """Projections where dimensions grow: the first block of every stage whose input differs from its output."""
    block, _ = TABLE_1[depth]
    total, in_channels = 0, WIDTHS[0]
    for width in WIDTHS:
        out_channels = width * block.expansion
        if in_channels != out_channels:  # stages 2-4, and stage 1 of bottleneck nets (64 -> 256)
            total += _projection(in_channels, out_channels)
        in_channels = out_channels
    return total


def _option_c_extra(depth: int) -> int:
    """Option C over B: a projection out_channels -> out_channels on every block that B leaves as identity."""
    block, layers = TABLE_1[depth]
    total, in_channels = 0, WIDTHS[0]
    for width, count in zip(WIDTHS, layers):
        out_channels = width * block.expansion
        identities = count if in_channels == out_channels else count - 1  # all of stage 1 in basic-block nets
        total += identities * _projection(out_channels, out_channels)
        in_channels = out_channels
    return total


def test_option_b_projection_count_from_layer_shapes() -> None:
    # The brief's worked example for ResNet-34: three projections 64->128, 128->256, 256->512.
    assert _option_b_projections(34) == (64 * 128 + 2 * 128) + (128 * 256 + 2 * 256) + (256 * 512 + 2 * 512)
    assert _option_b_projections(50) == sum(_projection(a, b) for a, b in
                                             [(64, 256), (256, 512), (512, 1024), (1024, 2048)])


@pytest.mark.parametrize("depth", DEPTHS)
def test_parameter_counts_match_torchvision(depth: int) -> None:
    for placement in _placements(depth):
        model = _meta(f"resnet{depth}", **placement)
        assert count_parameters(model) == EXACT_PARAMS[depth], placement
        assert model.depth == depth
    if depth in BOTTLENECK_DEPTHS:
        assert count_parameters(_meta(f"resnet{depth}_v1_5")) == EXACT_PARAMS[depth]


@pytest.mark.parametrize("depth", DEPTHS)
def test_state_dict_keys_and_shapes_are_torchvision_s(depth: int) -> None:
    with torch.device("meta"):
        reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    expected = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    for placement in _placements(depth):
        ours = _meta(f"resnet{depth}", **placement).state_dict()
        assert {key: tuple(value.shape) for key, value in ours.items()} == expected
    assert [name for name, _ in _meta(f"resnet{depth}").named_children()] == [
        "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"
    ]


def _randomise_batch_norm(model: torch.nn.Module) -> None:
    """Give every BN layer non-trivial statistics and affine parameters, so a miswired BN changes the output."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.normal_(0.0, 0.1)
                layer.running_mean.normal_(0.0, 0.1)
                layer.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize("depth", DEPTHS)
def test_torchvision_weights_give_torchvision_outputs_with_stride_on_the_3x3(depth: int) -> None:
    torch.manual_seed(depth)
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    _randomise_batch_norm(reference)
    state = reference.state_dict()
    block, layers = TABLE_1[depth]
    v1_5 = ImageNetResNet(block, layers, stride_in="3x3").eval()
    v1_5.load_state_dict(state, strict=True)
    with torch.device("meta"):  # the paper's placement gets the same weights, without a second init
        paper = ImageNetResNet(block, layers, stride_in="1x1").eval()
    paper.load_state_dict(state, strict=True, assign=True)
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(image)
        assert torch.allclose(v1_5(image), expected)
        if block is Bottleneck:  # the stride moves from the 3x3 to the first 1x1: a different function
            assert not torch.allclose(paper(image), expected, rtol=1e-3, atol=1e-3)
        else:  # a basic block has no 1x1 layer: the placement changes nothing
            assert torch.allclose(paper(image), expected)


@pytest.mark.parametrize("depth", BOTTLENECK_DEPTHS)
def test_stride_placement_of_downsampling_bottlenecks(depth: int) -> None:
    cases = [
        (_meta(f"resnet{depth}"), (2, 2), (1, 1)),  # the paper's default
        (_meta(f"resnet{depth}", stride_in="1x1"), (2, 2), (1, 1)),
        (_meta(f"resnet{depth}", stride_in="3x3"), (1, 1), (2, 2)),
        (_meta(f"resnet{depth}_v1_5"), (1, 1), (2, 2)),
    ]
    for model, conv1_stride, conv2_stride in cases:
        for stage in (model.layer2, model.layer3, model.layer4):
            first = stage[0]
            assert (first.conv1.stride, first.conv2.stride, first.conv3.stride) == (conv1_stride, conv2_stride, (1, 1))
            assert first.downsample[0].stride == (2, 2)  # the projection subsamples on its own
            assert all(b.conv1.stride == b.conv2.stride == (1, 1) for b in list(stage)[1:])
        assert all(b.conv1.stride == b.conv2.stride == (1, 1) for b in model.layer1)
    assert _meta(f"resnet{depth}").stride_in is StrideIn.CONV1X1


def test_stem_and_head_follow_table_1() -> None:
    model = _meta("resnet50")
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == ((7, 7), (2, 2), (3, 3))
    assert model.conv1.bias is None and model.conv1.out_channels == 64
    assert (model.maxpool.kernel_size, model.maxpool.stride, model.maxpool.padding) == (3, 2, 1)
    assert isinstance(model.avgpool, torch.nn.AdaptiveAvgPool2d) and model.fc.in_features == 2048
    assert [len(stage) for stage in (model.layer1, model.layer2, model.layer3, model.layer4)] == [3, 4, 6, 3]


@pytest.mark.parametrize("depth", DEPTHS)
def test_multiply_adds_match_table_1(depth: int) -> None:
    measured = multiply_adds(_meta(f"resnet{depth}"), 224) / 1e9
    print(f"resnet{depth}: {measured:.3f} x10^9 multiply-adds (paper Table 1: {TABLE_1_MULTIPLY_ADDS[depth]})")
    assert abs(measured - TABLE_1_MULTIPLY_ADDS[depth]) / TABLE_1_MULTIPLY_ADDS[depth] < 0.05
    assert model_info(f"resnet{depth}").paper_flops == TABLE_1_MULTIPLY_ADDS[depth]


@pytest.mark.parametrize("depth", BOTTLENECK_DEPTHS)
def test_stride_on_the_3x3_costs_exactly_the_first_1x1_at_full_resolution(depth: int) -> None:
    paper = multiply_adds(_meta(f"resnet{depth}"), 224)
    v1_5 = multiply_adds(_meta(f"resnet{depth}", stride_in="3x3"), 224)
    print(f"resnet{depth}: stride on 1x1 {paper / 1e9:.3f}, on 3x3 {v1_5 / 1e9:.3f} x10^9 multiply-adds")
    # In conv3_1, conv4_1, conv5_1 the first 1x1 (2w -> w channels) then runs on the 2s x 2s input map
    # instead of the s x s output map: 2w * w * (4 - 1) * s^2 more multiply-adds per stage.
    extra = sum(2 * width * width * side * side * 3 for width, side in ((128, 28), (256, 14), (512, 7)))
    assert v1_5 - paper == extra
    assert multiply_adds(_meta(f"resnet{depth}_v1_5"), 224) == v1_5


def test_multiply_adds_leave_a_real_model_untouched() -> None:
    model = create_model("resnet20").train()
    model.layer1.eval()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    assert multiply_adds(model, 32) == describe("resnet20")["multiply_adds"]
    assert model.training and not model.layer1.training and model.layer2.training
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("depth", DEPTHS)
def test_shortcut_options_a_b_c_differ_by_the_projections(depth: int) -> None:
    for placement in _placements(depth):
        option_a = count_parameters(_meta(f"resnet{depth}", shortcut="A", **placement))
        option_c = count_parameters(_meta(f"resnet{depth}", shortcut="C", **placement))
        assert option_a == EXACT_PARAMS[depth] - _option_b_projections(depth)
        assert option_c == EXACT_PARAMS[depth] + _option_c_extra(depth) > EXACT_PARAMS[depth]


def test_option_a_zero_pads_the_first_bottleneck_at_stride_1() -> None:
    model = _meta("resnet50", shortcut="A")
    pads = [m for m in model.modules() if isinstance(m, ZeroPadShortcut)]
    assert [(pad.extra_channels, pad.stride) for pad in pads] == [(192, 1), (256, 2), (512, 2), (1024, 2)]
    block = Bottleneck(64, 64, shortcut=Shortcut.A).eval()
    with torch.no_grad():
        assert block(torch.randn(1, 64, 8, 8)).shape == (1, 256, 8, 8)


def test_option_c_projects_every_block() -> None:
    model = _meta("resnet34", shortcut="C")
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 16 and all(isinstance(b.downsample, torch.nn.Sequential) for b in blocks)


@pytest.mark.parametrize("depth", (18, 34))
def test_plain_nets_are_the_option_a_resnets_without_shortcuts(depth: int) -> None:
    plain = _meta(f"plain{depth}")
    assert count_parameters(plain) == count_parameters(_meta(f"resnet{depth}", shortcut="A"))
    assert count_parameters(plain) == EXACT_PARAMS[depth] - _option_b_projections(depth)
    blocks = [m for m in plain.modules() if isinstance(m, BasicBlock)]
    assert blocks and all(block.downsample is None and not block.residual for block in blocks)
    assert not plain.residual and model_info(f"plain{depth}").residual is False
    assert plain.depth == depth
    weighted = [m for m in plain.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(weighted) == depth
    assert multiply_adds(plain, 224) == multiply_adds(_meta(f"resnet{depth}", shortcut="A"), 224)


def _additions(model: torch.nn.Module) -> int:
    graph = torch.fx.symbolic_trace(model).graph
    adds = (operator.add, operator.iadd, torch.add)
    return sum(1 for node in graph.nodes if node.op == "call_function" and node.target in adds)


def test_plain_nets_have_no_addition_and_resnets_one_per_block() -> None:
    assert _additions(_meta("plain18")) == 0
    assert _additions(_meta("plain34")) == 0
    assert _additions(_meta("resnet18")) == 8
    assert _additions(_meta("resnet34", shortcut="A")) == 16
    assert _additions(_meta("resnet50")) == 16


def test_the_imagenet_family_lists_the_paper_models_and_the_v1_5_twins() -> None:
    assert list_models("imagenet") == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "plain18",
                                       "plain34", "resnet50_v1_5", "resnet101_v1_5", "resnet152_v1_5"]


@pytest.mark.parametrize("name", list_models("imagenet"))
def test_forward_and_backward_on_every_registered_imagenet_model(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_num_classes_override() -> None:
    assert _meta("resnet50", num_classes=10).fc.out_features == 10
    assert count_parameters(_meta("resnet50", num_classes=10)) == EXACT_PARAMS[50] - 990 * (2048 + 1)
    model = create_model("resnet18", num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_stride_in_parses_and_bad_values_are_one_line() -> None:
    assert StrideIn.parse("3X3") is StrideIn.CONV3X3 and StrideIn.parse(StrideIn.CONV1X1) is StrideIn.CONV1X1
    for request in (lambda: create_model("resnet50", stride_in="2x2"), lambda: Bottleneck(64, 64, stride_in="v1.5")):
        with pytest.raises(ConfigError, match=r"^unknown stride_in '(2x2|v1\.5)': use 1x1 .* or 3x3") as error:
            request()
        assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("resnet18", {"stride_in": "3x3"}, "resnet18 has no option stride_in"),
        ("resnet50_v1_5", {"stride_in": "1x1"}, "resnet50_v1_5 fixes stride_in='3x3'; choose another architecture"),
        ("resnet50", {"depth": 101}, "resnet50 fixes depth=50"),
        ("resnet50", {"shortcut": "D"}, "unknown shortcut option 'D'"),
        ("resnet50", {"num_classes": 0}, "num_classes must be at least 1"),
    ],
)
def test_bad_requests_name_the_problem(name: str, overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        _meta(name, **overrides)
    assert "\n" not in str(error.value)


def test_only_table_1_depths_and_four_stages() -> None:
    with pytest.raises(ConfigError, match=r"^depth 20 is not in Table 1: ImageNet ResNets have depth 18, 34, 50"):
        imagenet_resnet(20)
    with pytest.raises(ConfigError, match=r"^layers must be four positive block counts"):
        ImageNetResNet(BasicBlock, (2, 2, 2))


def test_registry_holds_the_paper_figures() -> None:
    assert model_info("resnet50").paper_error == 22.85 and model_info("resnet50").paper_top5_error == 6.71
    assert model_info("resnet34").paper_error == 24.52  # option B, the registered default (Table 3)
    assert model_info("resnet18").paper_error == 27.88 and model_info("plain34").paper_error == 28.54
    assert model_info("plain18").paper_flops == 1.8 and model_info("resnet152").paper_flops == 11.3
    assert model_info("resnet50_v1_5").paper_error is None and model_info("resnet50_v1_5").paper_flops is None
    assert all(model_info(name).input_size == 224 for name in list_models("imagenet"))
    assert all(model_info(name).input_size == 32 for name in list_models("cifar"))
    assert model_info("resnet110").paper_flops is None and model_info("resnet110").paper_error == 6.43
    assert model_info("resnet101").depth == 101 and model_info("plain18").residual is False


def test_describe_reports_options_sizes_and_paper_figures() -> None:
    row = describe("resnet50", stride_in="3x3", num_classes=None)
    assert row["params"] == EXACT_PARAMS[50] and row["stride_in"] == "3x3" and row["shortcut"] == "B"
    assert row["input_size"] == 224 and row["num_classes"] == 1000 and row["paper_flops"] == 3.8
    assert row["multiply_adds"] == multiply_adds(_meta("resnet50", stride_in="3x3"), 224)
    small = describe("resnet18", input_size=112)
    assert small["input_size"] == 112 and small["multiply_adds"] < describe("resnet18")["multiply_adds"] / 3
    assert describe("plain18")["shortcut"] is None and describe("resnet18")["stride_in"] is None
