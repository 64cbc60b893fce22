"""Analyses of trained networks: the layer responses of He et al. 2015 (Sec. 4.2, Fig. 7)."""

from resnet_core.analysis.layer_responses import (
    LayerResponse,
    ResponseFigure,
    checkpoint_responses,
    layer_responses,
    plot_layer_responses,
    read_responses_csv,
    response_layers,
    write_figure_7,
    write_responses_csv,
)

__all__ = [
    "LayerResponse",
    "ResponseFigure",
    "checkpoint_responses",
    "layer_responses",
    "plot_layer_responses",
    "read_responses_csv",
    "response_layers",
    "write_figure_7",
    "write_responses_csv",
]
