"""The CIFAR networks of paper Sec. 4.2: exact sizes, option A/B/C shortcuts, plain twins, registry."""

from __future__ import annotations

import operator
import re

import pytest
import torch
import torch.fx

from resnet_core import ConfigError, count_parameters, create_model, list_models, model_info
from resnet_core.models import BasicBlock, ZeroPadShortcut

# Trainable parameters with option A and 10 classes (paper Table 6: 0.27M 0.46M 0.66M 0.85M 1.7M 19.4M).
EXACT_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
OPTION_B_EXTRA = 2_752  # 1x1 conv + BN at the two places where dimensions grow: (16*32 + 64) + (32*64 + 128)


@pytest.mark.parametrize("depth", sorted(EXACT_PARAMS))
def test_parameter_counts_match_table_6(depth: int) -> None:
    residual = create_model(f"resnet{depth}")
    plain = create_model(f"plain{depth}")
    projection = create_model(f"resnet{depth}", shortcut="B")
    assert count_parameters(residual) == EXACT_PARAMS[depth]
    assert count_parameters(plain) == EXACT_PARAMS[depth]
    assert count_parameters(projection) == EXACT_PARAMS[depth] + OPTION_B_EXTRA
    assert model_info(f"resnet{depth}").paper_params is not None


def test_layer_count_is_6n_plus_2() -> None:
    for depth in (20, 56, 110):
        model = create_model(f"resnet{depth}")
        weighted = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        assert len(weighted) == depth  # option A adds no conv layers


def test_option_c_projects_every_block() -> None:
    model = create_model("resnet20", shortcut="C")
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert all(isinstance(block.downsample, torch.nn.Sequential) for block in blocks)
    assert count_parameters(model) > EXACT_PARAMS[20] + OPTION_B_EXTRA


def test_option_a_shortcut_has_no_parameters_and_pads_and_subsamples() -> None:
    model = create_model("resnet20")
    pads = [m for m in model.modules() if isinstance(m, ZeroPadShortcut)]
    assert len(pads) == 2
    assert all(sum(p.numel() for p in pad.parameters()) == 0 for pad in pads)
    x = torch.randn(2, 16, 32, 32)
    y = ZeroPadShortcut(16, 32, stride=2)(x)
    assert y.shape == (2, 32, 16, 16)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2])  # identity on the subsampled grid
    assert torch.count_nonzero(y[:, 16:]) == 0  # appended channels are zeros


def test_identity_blocks_have_no_shortcut_module() -> None:
    model = create_model("resnet20")
    first_stage = list(model.layer1)
    assert all(block.downsample is None and block.residual for block in first_stage)


def _additions(model: torch.nn.Module) -> int:
    graph = torch.fx.symbolic_trace(model).graph
    adds = (operator.add, operator.iadd, torch.add)
    return sum(1 for node in graph.nodes if node.op == "call_function" and node.target in adds)


def test_plain_nets_have_no_addition_and_residual_nets_one_per_block() -> None:
    assert _additions(create_model("plain20")) == 0
    assert _additions(create_model("resnet20")) == 9
    assert _additions(create_model("resnet20", shortcut="B")) == 9


@pytest.mark.parametrize("name", ["resnet20", "plain32", "resnet56"])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_output_shapes(name: str, num_classes: int) -> None:
    model = create_model(name, num_classes=num_classes).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 3, 32, 32)).shape == (3, num_classes)


def test_forward_and_backward_on_every_registered_model() -> None:
    for name in list_models("cifar"):
        if name in ("resnet1202", "plain1202"):
            continue  # counted above; too slow to backprop in the default run
        model = create_model(name)
        loss = model(torch.randn(2, 3, 32, 32)).logsumexp(1).mean()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters()), name


def test_he_initialisation() -> None:
    model = create_model("resnet56")
    conv = model.layer2[1].conv1  # 32 -> 32 channels, 3x3: std = sqrt(2 / (9 * 32))
    expected = (2.0 / (9 * 32)) ** 0.5
    assert abs(conv.weight.std().item() - expected) / expected < 0.05
    assert torch.all(model.bn1.weight == 1) and torch.all(model.bn1.bias == 0)


def test_family_builds_any_6n_plus_2_depth() -> None:
    model = create_model("cifar_resnet", depth=26)
    assert model.depth == 26 and len(model.layer1) == 4
    assert not create_model("cifar_plain", depth=14).residual


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("resnet21", {}, "unknown architecture 'resnet21'"),
        ("cifar_resnet", {"depth": 25}, "depth 25 is not 6n+2"),
        ("resnet20", {"depth": 32}, "resnet20 fixes depth"),
        ("resnet20", {"width": 2}, "has no option width"),
        ("resnet20", {"shortcut": "D"}, "unknown shortcut option 'D'"),
    ],
)
def test_bad_requests_name_the_problem(name: str, overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        create_model(name, **overrides)
    assert "\n" not in str(error.value)


def test_registry_lists_the_paper_models_with_their_errors() -> None:
    names = list_models("cifar")
    for depth in EXACT_PARAMS:
        assert f"resnet{depth}" in names and f"plain{depth}" in names
    assert model_info("resnet110").paper_error == 6.43
    assert model_info("plain20").residual is False
    assert model_info("cifar_plain").residual is False and model_info("cifar_resnet").residual is True


@pytest.mark.parametrize("option", ["C", "c", "B", "b"])
def test_a_block_given_the_options_name_builds_that_option(option: str) -> None:
    """Option C projects on every block, B where dimensions grow (Table 3), whether given the enum or its name."""
    from torch import nn

    from resnet_core.models.blocks import BasicBlock, Bottleneck

    same = BasicBlock(16, 16, shortcut=option)
    grows = Bottleneck(64, 64, stride=2, shortcut=option)
    assert isinstance(grows.downsample, nn.Sequential)
    assert isinstance(same.downsample, nn.Sequential) == (option.upper() == "C")


def test_every_named_shortcut_option_is_built_and_every_built_one_is_named() -> None:
    from resnet_core.models.blocks import Shortcut
    from resnet_core.options import SHORTCUT_OPTIONS

    assert tuple(option.value for option in Shortcut) == SHORTCUT_OPTIONS
