"""Build UI-format workflows (what the ComfyUI frontend saves, schema version 0.4) from ``/object_info``.

The layout of a saved node follows the frontend 1.32 export (``graphToPrompt().workflow``): ``inputs`` holds
the sockets and the widgets converted to sockets that are linked (the frontend drops unlinked widget
sockets on export), ``widgets_values`` holds every widget value in widget order, including the values of
widgets the frontend adds itself (``control_after_generate`` after seeds, ``upload`` after image combos);
``links`` is ``[id, origin_id, origin_slot, target_id, target_slot, type]``. ``tests/test_browser.py``
loads the result in the real frontend and checks that it exports the same graph.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from .ui_to_api import SERIALIZED_ONLY, VIRTUAL_NODES, _input_order, is_widget, widget_slots

COLUMN_WIDTH = 460
ROW_GAP = 70          # vertical space between stacked nodes (the title bar, 30 px, sits above ``pos``)
NODE_WIDTH = 320
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24
MULTILINE_HEIGHT = 110
# Room for the pack's frontend widget (js/prior_swap.js) on the nodes it decorates.
EXTENSION_HEIGHT = {"PriorSwapCFG": 110, "PriorSwapGuider": 110, "PriorSwapDualCFGGuider": 110,
                    "PriorSwapInsight": 110}  # js/insight.js: the live curve, 96 px
NOTE_COLOR, NOTE_BGCOLOR = "#432", "#653"


@dataclass(frozen=True)
class Output:
    node: "Node"
    slot: int


@dataclass
class Node:
    id: int
    type: str
    pos: list[float]
    size: list[float]
    title: str | None = None
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    widgets_values: list[Any] = field(default_factory=list)
    properties: dict = field(default_factory=dict)
    color: str | None = None
    bgcolor: str | None = None

    def __getitem__(self, slot: int) -> Output:
        return Output(self, slot)


def _default(input_spec: Any) -> Any:
    kind = input_spec[0]
    options = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
    if "default" in options:
        return options["default"]
    if isinstance(kind, list):
        return kind[0] if kind else None
    if kind == "COMBO":
        return (options.get("options") or [None])[0]
    return {"INT": options.get("min", 0), "FLOAT": options.get("min", 0.0), "STRING": "", "BOOLEAN": False}[kind]


class UIGraph:
    """A workflow under construction; nodes are stacked in columns unless given a position."""

    def __init__(self, object_info: dict, name: str):
        self.info = object_info
        self.name = name
        self.nodes: list[Node] = []
        self.links: list[list] = []
        self.groups: list[dict] = []
        self._column_y: dict[int, float] = {}

    # -- nodes -----------------------------------------------------------------------------------
    def _place(self, col: int, size: list[float], pos: tuple[float, float] | None) -> list[float]:
        if pos is not None:
            return [float(pos[0]), float(pos[1])]
        y = self._column_y.get(col, 0.0)
        self._column_y[col] = y + size[1] + ROW_GAP
        return [float(col * COLUMN_WIDTH), y]

    def skip(self, col: int, height: float) -> None:
        """Leave vertical room in a column (e.g. for a group title)."""
        self._column_y[col] = self._column_y.get(col, 0.0) + height

    def add(self, kind: str, *, col: int = 0, pos: tuple[float, float] | None = None, title: str | None = None,
            node_width: float | None = None, control_after_generate: str = "fixed", **values: Any) -> Node:
        spec = self.info[kind]
        known = {name for name, _ in _input_order(spec)}
        unknown = set(values) - known
        if unknown:
            raise KeyError(f"{kind} has no input(s) {sorted(unknown)}")
        sockets, widgets_values = [], []
        for name, input_spec in _input_order(spec):
            value = values.get(name)
            if not is_widget(input_spec):
                sockets.append((name, input_spec[0], value))
            elif isinstance(value, Output):  # a widget converted to a linked socket
                sockets.append((name, input_spec[0], value))
        for name, input_spec in widget_slots(spec):
            if name is SERIALIZED_ONLY:
                widgets_values.append(control_after_generate if input_spec == "control_after_generate" else "image")
                continue
            value = values.get(name, _default(input_spec))
            widgets_values.append(_default(input_spec) if isinstance(value, Output) else value)
        n_widgets = len(widgets_values)
        multiline = sum(1 for name, s in widget_slots(spec) if name is not SERIALIZED_ONLY and s[0] == "STRING"
                        and len(s) > 1 and s[1].get("multiline"))
        height = (max(len(sockets), len(spec["output"]), 1) * SLOT_HEIGHT + (n_widgets - multiline) * WIDGET_HEIGHT
                  + multiline * MULTILINE_HEIGHT + 16 + EXTENSION_HEIGHT.get(kind, 0))
        size = [float(node_width or (400 if multiline else NODE_WIDTH)), float(height)]
        node = Node(id=len(self.nodes) + 1, type=kind, pos=self._place(col, size, pos), size=size, title=title,
                    widgets_values=widgets_values, properties={"Node name for S&R": kind})
        node.outputs = [{"name": out_name, "type": out_type, "links": []}
                        for out_type, out_name in zip(spec["output"], spec["output_name"])]
        declared = dict(_input_order(spec))
        for target_slot, (name, kind_, value) in enumerate(sockets):
            entry: dict[str, Any] = {"name": name, "type": "COMBO" if isinstance(kind_, list) else kind_, "link": None}
            if is_widget(declared[name]):
                entry["widget"] = {"name": name}
            if isinstance(value, Output):
                entry["link"] = self._link(value, node, target_slot, entry["type"])
            elif value is not None:
                raise TypeError(f"{kind}.{name} takes a link, got {value!r}")
            node.inputs.append(entry)
        self.nodes.append(node)
        return node

    def _link(self, source: Output, target: Node, target_slot: int, kind: str) -> int:
        link_id = len(self.links) + 1
        out_type = source.node.outputs[source.slot]["type"]
        if out_type != kind and "*" not in (out_type, kind):
            raise TypeError(f"cannot link {source.node.type}[{source.slot}] ({out_type}) to {target.type} ({kind})")
        self.links.append([link_id, source.node.id, source.slot, target.id, target_slot, out_type])
        source.node.outputs[source.slot]["links"].append(link_id)
        return link_id

    def note(self, text: str, *, col: int = 0, pos: tuple[float, float] | None = None, size=(440, 300),
             title: str = "About this workflow") -> Node:
        """A MarkdownNote (frontend-only node: it is never sent to the server)."""
        size = [float(size[0]), float(size[1])]
        node = Node(id=len(self.nodes) + 1, type="MarkdownNote", pos=self._place(col, size, pos), size=size,
                    title=title, widgets_values=[text], color=NOTE_COLOR, bgcolor=NOTE_BGCOLOR)
        self.nodes.append(node)
        return node

    def group(self, title: str, nodes: list[Node], color: str = "#3f789e", padding: float = 20) -> None:
        """A group around ``nodes`` (their title bars included)."""
        x0 = min(n.pos[0] for n in nodes) - padding
        y0 = min(n.pos[1] for n in nodes) - 30 - padding - 36  # node title bar, padding, group title
        x1 = max(n.pos[0] + n.size[0] for n in nodes) + padding
        y1 = max(n.pos[1] + n.size[1] for n in nodes) + padding
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                            "color": color, "font_size": 24, "flags": {}})

    # -- output ----------------------------------------------------------------------------------
    def _order(self) -> dict[int, int]:
        """Execution order as the frontend stores it (a topological order; notes first)."""
        incoming = {n.id: {lk[1] for lk in self.links if lk[3] == n.id} for n in self.nodes}
        order, done = {}, set()
        while len(done) < len(self.nodes):
            ready = [n.id for n in self.nodes if n.id not in done and incoming[n.id] <= done]
            if not ready:
                raise ValueError("cycle in workflow")
            for node_id in ready:
                order[node_id] = len(order)
                done.add(node_id)
        return order

    def serialize(self) -> dict:
        order = self._order()
        nodes = []
        for n in self.nodes:
            entry: dict[str, Any] = {"id": n.id, "type": n.type, "pos": n.pos, "size": n.size, "flags": {},
                                     "order": order[n.id], "mode": 0, "inputs": n.inputs, "outputs": n.outputs}
            if n.title:
                entry["title"] = n.title
            entry["properties"] = n.properties
            entry["widgets_values"] = n.widgets_values
            if n.color:
                entry["color"], entry["bgcolor"] = n.color, n.bgcolor
            nodes.append(entry)
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "comfyui-prior-swap/workflows/" + self.name)),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": nodes,
            "links": self.links,
            "groups": self.groups,
            "config": {},
            "extra": {},
            "version": 0.4,
        }


def note_text(workflow: dict) -> str:
    """The text of the workflow's MarkdownNote/Note nodes."""
    return "\n".join(str(v) for n in workflow["nodes"] if n["type"] in ("Note", "MarkdownNote")
                     for v in n.get("widgets_values") or [])


def is_virtual(node: dict) -> bool:
    return node["type"] in VIRTUAL_NODES
