"""Prior Swap Options: where and how the prior runs, as a choice saved with the workflow."""
from __future__ import annotations

from comfy_api.latest import io

from ..py.options import DEVICE_CHOICES, GRAPH_MODES, RunOptions
from ..py.routing import with_run_options
from .common import CATEGORY, choice


class PriorSwapOptions(io.ComfyNode):
    """Speed and placement options for Prior Swap CFG and the guiders (never change which terms are computed)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PriorSwapOptions",
            display_name="Prior Swap Options",
            category=f"{CATEGORY}/advanced",
            description=("Advanced: how the prior runs. Connect it between the fine-tune's loader and Prior Swap CFG "
                         "(or a Prior Swap guider). Without it the machine's defaults apply (environment variables "
                         "PRIOR_SWAP_CUDA_GRAPHS, PRIOR_SWAP_KEEP_GRAPHS, PRIOR_SWAP_PRIOR_DEVICE, PRIOR_SWAP_OVERLAP)."),
            inputs=[
                io.Model.Input("model", tooltip="The fine-tune, before Prior Swap CFG or the Prior Swap guider."),
                io.Combo.Input("cuda_graphs", options=list(GRAPH_MODES), default=GRAPH_MODES[0],
                               tooltip="Replay each model's call as a CUDA graph (GPU only; the image is the same): "
                                       "keep the graphs across runs (fastest), capture them anew each run (frees "
                                       "their memory after every run), or off."),
                io.Combo.Input("prior_device", options=list(DEVICE_CHOICES), default=DEVICE_CHOICES[0],
                               tooltip="Where the prior's weights are loaded: on the model's GPU, or on another GPU "
                                       "of this machine, where its forward runs beside the fine-tune's (on a "
                                       "machine with one GPU a warning says so and the model's GPU is used)."),
                io.Boolean.Input("second_stream", default=False,
                                 tooltip="One GPU: run the prior's forward on a second CUDA stream beside the "
                                         "fine-tune's, the same image. Where both models fit it is faster (SDXL "
                                         "on an H200: 8-10 %) and holds a second graph memory pool (+0.3 GB); "
                                         "where ComfyUI streams the pair (a small card) it is slower."),
            ],
            outputs=[io.Model.Output(tooltip="The fine-tune with these options, for Prior Swap CFG or a guider.")],
        )

    @classmethod
    def validate_inputs(cls, cuda_graphs: str | None = None, prior_device: str | None = None) -> bool | str:
        graphs = choice("cuda_graphs", cuda_graphs, GRAPH_MODES)
        return graphs if graphs is not True else choice("prior_device", prior_device, DEVICE_CHOICES)

    @classmethod
    def execute(cls, model, cuda_graphs: str, prior_device: str, second_stream: bool) -> io.NodeOutput:
        device = None if prior_device == DEVICE_CHOICES[0] else "another"
        options = RunOptions(cuda_graphs=cuda_graphs, overlap=second_stream, prior_device=device)
        return io.NodeOutput(with_run_options(model, options))


NODES = [PriorSwapOptions]
