"""Layer responses (paper Sec. 4.2, Fig. 7): which layers, their exact std, the CSV and figure, and the CLI's
``--layer-responses`` over runs it trained itself (synthetic data, a real CIFAR-10 subset, an ImageNet tree)."""

from __future__ import annotations

import math
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from synthetic import make_dataset, write_image_tree, write_imagenet_tree
from torch import nn

from resnet_core import TrainConfig, create_model, fit
from resnet_core.analysis import (
    LayerResponse,
    checkpoint_responses,
    layer_responses,
    plot_layer_responses,
    read_responses_csv,
    response_layers,
    write_responses_csv,
)
from resnet_core.engine.checkpoint import CHECKPOINT_NAME
from resnet_core.engine.cli import main

TINY_RUN = ["--batch-size", "16", "--iterations", "2", "--eval-every", "2", "--device", "cpu", "--no-progress",
            "--threads", "1"]


@pytest.mark.parametrize(("name", "count", "stem_3x3"), [
    ("resnet20", 19, True), ("plain20", 19, True), ("resnet56", 55, True), ("resnet110", 109, True),
    ("resnet18", 16, False), ("resnet50", 16, False)])
def test_one_response_layer_per_3x3_convolution(name: str, count: int, stem_3x3: bool) -> None:
    with torch.device("meta"):  # structure only: no weights drawn
        model = create_model(name)
    layers = response_layers(model)
    assert len(layers) == count
    assert all(isinstance(norm, nn.BatchNorm2d) for _, norm in layers)
    # The CIFAR stem is layer 1 of the paper's count; the 7x7 ImageNet stem is not a 3x3 layer.
    assert (layers[0][1] is model.bn1) == stem_3x3


def _call_order(model: nn.Module, images: torch.Tensor) -> list[str]:
    """Names of the convolutions and BNs in the order they run, with each convolution's kernel."""
    calls: list[str] = []
    handles = [module.register_forward_hook(lambda m, i, o, name=name: calls.append(name))
               for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.BatchNorm2d))]
    with torch.no_grad():
        model.eval()(images)
    for handle in handles:
        handle.remove()
    return calls


@pytest.mark.parametrize(("name", "size"), [("resnet20", 16), ("resnet50", 32)])
def test_layers_are_the_bns_after_3x3_convolutions_in_forward_order(name: str, size: int) -> None:
    model = create_model(name, shortcut="C")  # projection shortcuts (1x1 conv + BN) everywhere: all excluded
    modules = dict(model.named_modules())
    calls = _call_order(model, torch.randn(2, 3, size, size))
    expected = [after for before, after in zip(calls, calls[1:])
                if isinstance(modules[before], nn.Conv2d) and modules[before].kernel_size == (3, 3)]
    assert [name for name, _ in response_layers(model)] == expected


def _perturbed_cifar_net() -> nn.Module:
    """A depth-8 option-B ResNet whose BNs are not the identity, so every layer has its own std."""
    torch.manual_seed(0)
    model = create_model("cifar_resnet", depth=8, shortcut="B")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-1.0, 1.0)
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _manual_responses(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The forward pass of Fig. 5 (left) written out, collecting each 3x3 layer's output after BN."""
    outputs = [model.bn1(model.conv1(images))]
    x = torch.relu(outputs[-1])
    for stage in (model.layer1, model.layer2, model.layer3):
        for block in stage:
            outputs.append(block.bn1(block.conv1(x)))
            outputs.append(block.bn2(block.conv2(torch.relu(outputs[-1]))))
            x = torch.relu(outputs[-1] + (x if block.downsample is None else block.downsample(x)))
    return outputs


def test_std_is_exactly_the_std_of_all_outputs_however_batched() -> None:
    model = _perturbed_cifar_net()
    images = torch.randn(12, 3, 16, 16) * 2 + 0.5
    with torch.no_grad():
        expected = [output.double().std().item() for output in _manual_responses(model, images)]
    whole = layer_responses(model, [images])
    assert [layer.index for layer in whole] == list(range(1, 8))
    assert [layer.std for layer in whole] == pytest.approx(expected, rel=1e-6)
    assert len(set(expected)) == len(expected)
    for batches in (list(images.split(5)), [images.view(6, 2, 3, 16, 16)], [images[:1], images[1:]]):
        assert [layer.std for layer in layer_responses(model, batches)] == pytest.approx(expected, rel=1e-6)


def test_modes_restored_and_hooks_removed_also_on_error() -> None:
    model = _perturbed_cifar_net().train()
    model.layer2.eval()  # a mixed state is given back as it was
    modes = [module.training for module in model.modules()]
    layer_responses(model, [torch.randn(2, 3, 16, 16)])
    assert [module.training for module in model.modules()] == modes
    assert not any(module._forward_hooks for module in model.modules())
    with pytest.raises(ValueError, match="expected image batches"):
        layer_responses(model, [torch.randn(2, 3, 16, 16), torch.randn(3, 16, 16)])
    assert [module.training for module in model.modules()] == modes
    assert not any(module._forward_hooks for module in model.modules())


def _responses() -> dict[str, list[LayerResponse]]:
    return {"plain20": [LayerResponse(1, "bn1", 1.5), LayerResponse(2, "layer1.0.bn1", 2.0 / 3.0),
                        LayerResponse(3, "layer1.0.bn2", 2.25)],
            "resnet20": [LayerResponse(1, "bn1", 0.1 + 0.2), LayerResponse(2, "layer1.0.bn1", 0.5)]}


def test_csv_round_trip_and_ranks(tmp_path: Path) -> None:
    path = write_responses_csv(_responses(), tmp_path / "sub" / "responses.csv")
    assert read_responses_csv(path) == _responses()  # exact floats
    lines = path.read_text().splitlines()
    assert lines[0] == "model,index,layer,std,rank"
    assert [line.rsplit(",", 1)[1] for line in lines[1:]] == ["2", "3", "1", "2", "1"]


def test_plot_is_a_two_panel_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    panels: list[list[str]] = []
    save = Figure.savefig

    def recording_save(self: Figure, *args: object, **kwargs: object) -> None:
        panels.extend([axes.get_xlabel(), axes.get_ylabel(), axes.get_yscale(),
                       [line.get_linestyle() for line in axes.lines]] for axes in self.axes)
        save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_save)
    path = plot_layer_responses(_responses(), tmp_path / "fig7.png", "Fig. 7")
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 10_000
    assert panels == [["layer index (original)", "std", "linear", ["--", "-"]],
                      ["layer index (sorted by magnitude)", "std", "linear", ["--", "-"]]]
    # Stds over more than two decades (a plain net early in training) get a log axis; flags beat the names.
    panels.clear()
    spread = {"a": [LayerResponse(1, "bn1", 0.5), LayerResponse(2, "layer1.0.bn1", 500.0)]}
    plot_layer_responses(spread, tmp_path / "spread.png", "spread", residual={"a": False})
    assert [panel[2:] for panel in panels] == [["log", ["--"]], ["log", ["--"]]]


# ----------------------------------------------------------------------------------------- through the CLI
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-iteration ResNet-20 and plain-20 trained by the CLI on a small synthetic class-folder tree."""
    root = tmp_path_factory.mktemp("runs")
    tree = write_image_tree(make_dataset(train=64, test=24), root / "tree")
    for arch in ("cifar_resnet", "cifar_plain"):
        assert main(["--arch", arch, "--depth", "20", "--data", str(tree), "--cache-dir", str(root / "cache"),
                     *TINY_RUN, "--out", str(root / arch)]) == 0
    return root


def test_cli_writes_csv_and_figure_of_the_runs(tiny_runs: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(tiny_runs / "cifar_resnet", tmp_path / "again")  # a second ResNet-20: named by its directory
    runs = [str(tiny_runs / "cifar_resnet"), str(tiny_runs / "cifar_plain" / CHECKPOINT_NAME), str(tmp_path / "again")]
    capsys.readouterr()
    assert main(["--layer-responses", *runs, "--out", str(tmp_path / "fig7"), "--device", "cpu",
                 "--eval-batch-size", "7", "--data", str(tiny_runs / "tree")]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and str(tmp_path / "fig7" / "layer_responses.csv") in line and "plain20" in line
    responses = read_responses_csv(tmp_path / "fig7" / "layer_responses.csv")
    assert list(responses) == ["cifar_resnet", "plain20", "again"]
    assert [len(layers) for layers in responses.values()] == [19, 19, 19]
    assert responses["cifar_resnet"] == responses["again"]  # the same checkpoint
    assert all(math.isfinite(layer.std) and layer.std > 0 for layers in responses.values() for layer in layers)
    assert (tmp_path / "fig7" / "layer_responses.png").stat().st_size > 0

    label, alone = checkpoint_responses(tiny_runs / "cifar_resnet" / CHECKPOINT_NAME, batch_size=24)
    assert label == "resnet20" and [layer.std for layer in alone] == pytest.approx(
        [layer.std for layer in responses["again"]], rel=1e-6)  # batching does not matter


def test_cli_default_out_is_the_first_run(tiny_runs: Path, tmp_path: Path) -> None:
    run = shutil.copytree(tiny_runs / "cifar_plain", tmp_path / "plain")
    assert main(["--layer-responses", str(run), "--device", "cpu"]) == 0
    assert list(read_responses_csv(run / "layer_responses.csv")) == ["plain20"]
    assert (run / "layer_responses.png").is_file()


@pytest.mark.parametrize("problem", ["missing", "empty dir", "corrupt", "training option"])
def test_cli_mistakes_are_one_line_exit_2(problem: str, tiny_runs: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run, extra = tmp_path / "run", []
    if problem == "empty dir":
        run.mkdir()
    elif problem == "corrupt":
        run.mkdir()
        (run / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    elif problem == "training option":
        run, extra = tiny_runs / "cifar_resnet", ["--iterations", "5"]
    assert main(["--layer-responses", str(run), *extra, "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and captured.err.startswith("resnet_core.train: error: ")
    assert not (run / "layer_responses.csv").exists()


def test_cli_interrupted_says_to_rerun(tiny_runs: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("resnet_core.engine.cli.write_figure_7", interrupted)
    assert main(["--layer-responses", str(tiny_runs / "cifar_resnet")]) == 130
    assert capsys.readouterr().err == "resnet_core.train: interrupted; rerun the same command to write the layer " \
                                      "responses\n"


def test_imagenet_bottleneck_checkpoint_with_ten_crops(tmp_path: Path) -> None:
    """Any engine checkpoint: a ResNet-50 (stride on the 3x3) scored with the paper's 10-crop views."""
    tree = write_imagenet_tree(make_dataset(num_classes=4, train=16, test=8, size=16), tmp_path / "tree", size=40)
    config = TrainConfig.for_dataset("imagenet", arch="resnet50", stride_in="3x3", data=str(tree), image_size=32,
                                     batch_size=8, eval_batch_size=8, iterations=1, eval_every=1, workers=0,
                                     mean_images=16, device="cpu")
    assert config.crops == 10
    fit(config, out_dir=tmp_path / "run")
    label, responses = checkpoint_responses(tmp_path / "run" / CHECKPOINT_NAME)
    assert label == "resnet50" and len(responses) == 16
    assert all(math.isfinite(layer.std) and layer.std > 0 for layer in responses)


def _real_subset(archive: Path, root: Path, train: int, test: int) -> Path:
    """The first ``train`` / ``test`` JPEGs of each class of the real CIFAR-10 copy, as a class-folder tree."""
    wanted = {"train": train, "test": test}
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(archive) as stream:
        for member in stream:
            parts = Path(member.name).parts  # cifar10-jpeg/<split>/<class>/<NNNN>.jpg
            if not member.isfile() or len(parts) != 4 or parts[1] not in wanted:
                continue
            key = (parts[1], parts[2])
            if taken.get(key, 0) < wanted[parts[1]]:
                taken[key] = taken.get(key, 0) + 1
                target = root / parts[1] / parts[2] / parts[3]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(stream.extractfile(member).read())  # type: ignore[union-attr]
    return root


def test_real_cifar10_subset_responses_of_a_one_iteration_run(real_data_dir: Path, tmp_path: Path) -> None:
    tree = _real_subset(real_data_dir / "cifar10-jpeg.tar.gz", tmp_path / "cifar10", train=20, test=10)
    assert main(["--arch", "resnet20", "--data", str(tree), "--cache-dir", str(tmp_path / "cache"), *TINY_RUN,
                 "--iterations", "1", "--eval-every", "1", "--out", str(tmp_path / "run")]) == 0
    label, responses = checkpoint_responses(tmp_path / "run" / CHECKPOINT_NAME)
    assert label == "resnet20" and [layer.index for layer in responses] == list(range(1, 20))
    assert all(math.isfinite(layer.std) and layer.std > 0 for layer in responses)
    print("resnet20 after 1 iteration, std per 3x3 layer on 100 real test images:",
          " ".join(f"{layer.std:.3f}" for layer in responses))
