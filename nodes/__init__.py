"""Node classes of the pack (ComfyUI's V3 schema): they declare inputs and call into ``py/``.

ComfyUI enters the pack through ``comfy_entrypoint`` (the package's ``__init__.py``), which returns
:class:`PriorSwapExtension`. ``NODE_CLASS_MAPPINGS`` here (node id -> class) is for scripts and tests
that call a node directly, e.g. ``NODE_CLASS_MAPPINGS["PriorSwapCFG"].execute(model, prior, 1.0, 0.0, 1.0)[0]``;
the package itself does not export it (ComfyUI would then load the pack as V1).
"""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from . import guidance_nodes, insight_nodes, options_nodes, prior_nodes, toy_nodes

NODES: list[type[io.ComfyNode]] = [*prior_nodes.NODES, *guidance_nodes.NODES, *options_nodes.NODES,
                                   *insight_nodes.NODES, *toy_nodes.NODES]
# Each class is named after its node id (tests/test_registration.py checks it).
NODE_CLASS_MAPPINGS: dict[str, type[io.ComfyNode]] = {node.__name__: node for node in NODES}


class PriorSwapExtension(ComfyExtension):
    """The pack as a V3 extension: its node list."""

    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
