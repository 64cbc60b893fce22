"""Analysis of layer responses (He et al. 2015, Sec. 4.2, Fig. 7).

"Fig. 7 shows the standard deviations (std) of the layer responses. The responses are the outputs of each
3x3 layer, after BN and before other nonlinearity (ReLU/addition)." The paper's top panel plots the stds in
the original layer order, the bottom panel the same stds sorted in descending order, for plain-20/56 and
ResNet-20/56/110 on the CIFAR-10 test images; residual functions "might be generally closer to zero than
the non-residual functions", so ResNets show smaller responses.

Here a *response layer* is the batch-norm module that directly follows a 3x3 convolution, found in the
model's traced data flow (:mod:`torch.fx`), never by module names: the CIFAR stem's 3x3 layer is layer 1,
then the two 3x3 layers of each basic block (Fig. 5 left) or the single 3x3 layer of each bottleneck (Fig. 5
right). The ImageNet nets' 7x7 stem and the 1x1 layers (bottleneck ends, projection shortcuts) are not 3x3
layers, so they are left out. The stds are taken in inference mode (BN with its running statistics), in
fp32 whatever precision the run trained in, over every element (image, channel, position) of the test split.

:func:`checkpoint_responses` computes them for any checkpoint of the engine through the engine's own input
pipeline; :func:`write_figure_7` (``python -m resnet_core.train --layer-responses RUN ...``) writes the CSV
and the figure of several runs. The figure is drawn from the CSV's records alone (:func:`read_responses_csv`),
so it can be redrawn without recomputing.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.fx
from torch import nn
from torch.utils.hooks import RemovableHandle

from resnet_core.atomic import write_text
from resnet_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from resnet_core.engine.config import TrainConfig
from resnet_core.engine.distributed import ProcessGroup
from resnet_core.engine.evaluate import accumulator_dtype
from resnet_core.engine.fit import build_model, resolve_device
from resnet_core.engine.inputs import load_inputs
from resnet_core.errors import CheckpointError, ConfigError, DataError
from resnet_core.models import model_info

CSV_NAME, PNG_NAME = "layer_responses.csv", "layer_responses.png"
CSV_COLUMNS = ("model", "index", "layer", "std", "rank")
DEFAULT_TITLE = "Std of the 3x3 layer responses (He et al. 2015, Sec. 4.2, Fig. 7)"
LOG_SCALE_SPREAD = 100.0
"""Largest / smallest std beyond which the figure's std axis is logarithmic."""
_KERNEL_3X3 = (3, 3)


@dataclass(frozen=True)
class LayerResponse:
    """The std of one 3x3 layer's response (after BN, before ReLU/addition), Sec. 4.2, Fig. 7."""

    index: int
    """1-based position in forward (layer) order: the paper's "layer index (original)"."""
    name: str
    """Qualified name of the layer's batch-norm module, e.g. ``layer1.0.bn2``."""
    std: float


@dataclass(frozen=True)
class ResponseFigure:
    """What :func:`write_figure_7` wrote: the CSV, the PNG, and the responses per model label."""

    csv: Path
    png: Path
    responses: dict[str, list[LayerResponse]]


def response_layers(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """The batch-norm module that directly follows each 3x3 convolution of ``model``, in forward order.

    These are the layers whose outputs Fig. 7 (Sec. 4.2) measures: "the outputs of each 3x3 layer, after BN and
    before other nonlinearity". The pairs are read from the traced data flow (a convolution whose only consumer
    is a ``BatchNorm2d``), so the 7x7 ImageNet stem, the 1x1 bottleneck layers and projection shortcuts are
    excluded by their kernel, whatever the modules are called. Raises :class:`ConfigError` when ``model`` cannot
    be traced symbolically (every registered model can).
    """
    try:
        graph = torch.fx.Tracer().trace(model)
    except Exception as error:  # tracing fails in many ways on data-dependent control flow
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"cannot trace {type(model).__name__} to find its 3x3 layers ({reason})") from None
    modules = dict(model.named_modules())
    layers: list[tuple[str, nn.BatchNorm2d]] = []
    seen: set[str] = set()
    for node in graph.nodes:
        norm = modules.get(str(node.target)) if node.op == "call_module" else None
        if not isinstance(norm, nn.BatchNorm2d) or not node.args or str(node.target) in seen:
            continue
        source = node.args[0]
        conv = modules.get(str(source.target)) if isinstance(source, torch.fx.Node) and source.op == "call_module" \
            else None
        if isinstance(conv, nn.Conv2d) and tuple(conv.kernel_size) == _KERNEL_3X3 and len(source.users) == 1:
            layers.append((str(node.target), norm))
            seen.add(str(node.target))
    return layers


class _RunningMoments:
    """Count, mean and sum of squared deviations of every element seen, merged batch by batch (Chan et al.) in
    float64 on the device (float32 on MPS, which has no float64); read once at the end, no host sync per batch."""

    def __init__(self, device: torch.device) -> None:
        self.dtype = accumulator_dtype(device)
        self.count = 0
        self.mean = torch.zeros((), dtype=self.dtype, device=device)
        self.m2 = torch.zeros((), dtype=self.dtype, device=device)

    def hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        """A forward hook: add the module's ``output`` (read before any in-place ReLU changes it)."""
        self.add(output)

    def add(self, values: torch.Tensor) -> None:
        n = values.numel()
        if n == 0:
            return
        values = values.detach().float()
        mean = values.sum(dtype=self.dtype) / n
        shift = mean.to(values.dtype)
        # Deviations from the fp32-rounded mean, squared in fp32 and summed in float64; then corrected exactly
        # for the rounding of the mean: sum((x - s)^2) = M2 + n (mean - s)^2.
        m2 = (values - shift).square_().sum(dtype=self.dtype) - n * (mean - shift.to(self.dtype)) ** 2
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += m2 + delta**2 * (self.count * n / total)
        self.count = total

    def std(self) -> float:
        """The unbiased std (``torch.std``'s default) of every element added."""
        return math.sqrt(max(self.m2.item(), 0.0) / (self.count - 1))


def layer_responses(model: nn.Module, batches: Iterable[torch.Tensor]) -> list[LayerResponse]:
    """The std of each 3x3 layer's response (:func:`response_layers`) over all ``batches`` (Sec. 4.2, Fig. 7).

    ``batches`` are normalised float inputs (B, C, H, W), or (B, crops, C, H, W) which is scored as B * crops
    images; they are moved to the model's device. The model runs in inference mode without gradients; each std
    is over every element of the layer's outputs (images, channels, positions), accumulated exactly in float64.
    The hooks are removed and every module's train/eval mode restored afterwards, also on error.
    """
    layers = response_layers(model)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    moments = [_RunningMoments(device) for _ in layers]
    modes = [(module, module.training) for module in model.modules()]
    handles: list[RemovableHandle] = []
    try:
        handles = [norm.register_forward_hook(moment.hook) for moment, (_, norm) in zip(moments, layers)]
        model.eval()
        with torch.no_grad():
            for batch in batches:
                if batch.dim() == 5:
                    batch = batch.flatten(0, 1)
                if batch.dim() != 4:
                    raise ValueError(f"expected image batches (B, C, H, W) or (B, crops, C, H, W), got shape "
                                     f"{tuple(batch.shape)}")
                model(batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
    if layers and moments[0].count < 2:
        raise DataError("layer responses need images: the batches given were empty")
    return [LayerResponse(index, name, moment.std())
            for index, ((name, _), moment) in enumerate(zip(layers, moments), start=1)]


def ranks(responses: Sequence[LayerResponse]) -> list[int]:
    """Each layer's rank by std, 1 for the largest (ties by layer order): Fig. 7's "sorted by magnitude"."""
    order = sorted(range(len(responses)), key=lambda i: (-responses[i].std, responses[i].index))
    rank = [0] * len(responses)
    for position, i in enumerate(order, start=1):
        rank[i] = position
    return rank


def write_responses_csv(responses: Mapping[str, Sequence[LayerResponse]], path: Path) -> Path:
    """Write ``model,index,layer,std,rank`` rows (one per layer and model label) to ``path`` and return it.

    ``std`` is written in full precision, so :func:`read_responses_csv` gives back the same values.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for label, layers in responses.items():
        for layer, rank in zip(layers, ranks(layers)):
            writer.writerow([label, layer.index, layer.name, repr(float(layer.std)), rank])
    return write_text(path, buffer.getvalue())  # readers never see half a file


def read_responses_csv(path: Path) -> dict[str, list[LayerResponse]]:
    """The responses per model label from a CSV of :func:`write_responses_csv`, each in layer order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no layer-responses CSV at '{path}'")
    responses: dict[str, list[LayerResponse]] = {}
    with path.open(newline="") as stream:
        reader = csv.DictReader(stream)
        missing = [column for column in CSV_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"'{path}' is not a layer-responses CSV: it has no column {', '.join(missing)}")
        for row in reader:
            responses.setdefault(row["model"], []).append(
                LayerResponse(int(row["index"]), row["layer"], float(row["std"])))
    return {label: sorted(layers, key=lambda layer: layer.index) for label, layers in responses.items()}


def plot_layer_responses(
    responses: Mapping[str, Sequence[LayerResponse]],
    path: Path,
    title: str = DEFAULT_TITLE,
    residual: Mapping[str, bool] | None = None,
) -> Path:
    """Draw Fig. 7 (Sec. 4.2) as a PNG at ``path`` and return it: top, std vs layer index; bottom, the same stds
    sorted in descending order. One curve per model label: residual nets solid, plain nets dashed. The std axis
    is linear as in the paper, or logarithmic when the stds spread over more than :data:`LOG_SCALE_SPREAD`.
    ``residual`` says which labels are residual; labels it leaves out count as plain when they start with
    "plain" (as ``plain20``), else as residual.
    """
    if not responses:
        raise ValueError("no layer responses to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(7.0, 7.0), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1)
    for label, layers in responses.items():
        is_residual = residual[label] if residual is not None and label in residual \
            else not label.lower().startswith("plain")
        style = "-" if is_residual else "--"
        stds = [layer.std for layer in layers]
        (line,) = top.plot([layer.index for layer in layers], stds, style, label=label, linewidth=1.2)
        bottom.plot(range(1, len(stds) + 1), sorted(stds, reverse=True), style, label=label, linewidth=1.2,
                    color=line.get_color())
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    stds = [layer.std for layers in responses.values() for layer in layers]
    # The paper's axis is linear; stds spread over more than two decades (e.g. a plain net early in training,
    # whose responses grow layer after layer) are drawn on a log axis so that the smaller curves stay visible.
    spread = bool(stds) and min(stds) > 0 and max(stds) / min(stds) > LOG_SCALE_SPREAD
    for axes in (top, bottom):
        axes.set_ylabel("std")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are counted
        if spread:
            axes.set_yscale("log")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150)
    return path


def model_label(config: TrainConfig, model: nn.Module) -> str:
    """``config.arch`` when the name fixes the depth (``resnet20``, ``plain56``, ``resnet50``), else, for the 6n+2
    families, the paper's name of the net built (``cifar_plain`` of depth 8: ``plain8``)."""
    if "depth" in model_info(config.arch).fixed:
        return config.arch
    return f"{'resnet' if getattr(model, 'residual', True) else 'plain'}{getattr(model, 'depth', '')}"


def checkpoint_responses(
    checkpoint: Path,
    data: str | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
) -> tuple[str, list[LayerResponse]]:
    """(model label, layer responses) of the model in an engine ``checkpoint`` over its run's test split.

    The model is rebuilt from the saved config (arch, depth, shortcut, stride_in; classes from the saved
    classifier) and the test split is built by the engine's input pipeline (:func:`load_inputs`, normalised with
    the training statistics as in training), alone in this process. ``data`` replaces the config's data path,
    ``batch_size`` its ``eval_batch_size``; ``device`` is ``cpu``, ``cuda[:N]``, ``mps`` or ``auto``.
    """
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("model"), dict) \
            or "fc.weight" not in state["model"]:
        raise CheckpointError(f"'{checkpoint}' holds no model and config of a resnet_core run")
    changes: dict[str, object] = {"device": device}
    if data is not None:
        changes["data"] = str(data)
    if batch_size is not None:
        changes["eval_batch_size"] = batch_size
    config = TrainConfig.from_dict(state["config"]).replace(**changes)
    group = ProcessGroup(rank=0, world_size=1, local_rank=0)  # the whole split here, whatever else runs
    target = resolve_device(config.device, group)
    model = build_model(config, num_classes=int(state["model"]["fc.weight"].shape[0]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        reason = str(error).splitlines()[0]
        raise CheckpointError(f"'{checkpoint}' does not fit {config.arch} ({reason})") from None
    model.to(target)
    inputs = load_inputs(config, None, group, target)
    return model_label(config, model), layer_responses(model, (images for images, _ in inputs.test.batches()))


def run_checkpoint(path: Path) -> Path:
    """The checkpoint of a run directory (its ``checkpoint.pt``), or ``path`` itself when it is a file."""
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT_NAME).is_file():
            raise CheckpointError(f"'{path}' holds no {CHECKPOINT_NAME}: pass a run directory written by "
                                  "python -m resnet_core.train, or a checkpoint file")
        return path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no run directory or checkpoint at '{path}'")
    return path


def unique_labels(labels: Sequence[str], runs: Sequence[Path]) -> list[str]:
    """``labels``, where two runs share one, replaced by their run directory names (then by their paths, then
    numbered), so that every curve of Fig. 7 has its own name."""
    candidates = [
        list(labels),
        [name if labels.count(name) == 1 else run.name for name, run in zip(labels, runs)],
        [name if labels.count(name) == 1 else str(run) for name, run in zip(labels, runs)],
    ]
    for names in candidates:
        if len(set(names)) == len(names):
            return names
    return [f"{name}#{position}" for position, name in enumerate(candidates[-1], start=1)]


def write_figure_7(
    runs: Sequence[Path],
    out_dir: Path | None = None,
    *,
    data: str | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
) -> ResponseFigure:
    """Compute the layer responses of each run (a run directory or a checkpoint file) and write
    ``layer_responses.csv`` and ``layer_responses.png`` (Fig. 7) into ``out_dir``, by default the first run's
    directory. Every run's checkpoint is checked before any data is read."""
    if not runs:
        raise ConfigError("no runs given: pass one or more run directories or checkpoints")
    checkpoints = [run_checkpoint(Path(run)) for run in runs]
    computed = [checkpoint_responses(path, data=data, device=device, batch_size=batch_size) for path in checkpoints]
    labels = unique_labels([label for label, _ in computed], [path.parent for path in checkpoints])
    responses = {label: layers for label, (_, layers) in zip(labels, computed)}
    residual = {label: not original.startswith("plain") for label, (original, _) in zip(labels, computed)}
    out = Path(out_dir) if out_dir is not None else checkpoints[0].parent
    csv_path = write_responses_csv(responses, out / CSV_NAME)
    png_path = plot_layer_responses(read_responses_csv(csv_path), out / PNG_NAME, residual=residual)
    return ResponseFigure(csv_path, png_path, responses)
