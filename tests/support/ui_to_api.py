"""Convert a UI-format workflow (what the ComfyUI frontend saves) into an API-format prompt (what POST /prompt takes).

The rules mirror the frontend's ``graphToPrompt`` (ComfyUI_frontend 1.32, checked against it in a browser by
``tests/test_browser.py``):

- The node's widgets are rebuilt from ``/object_info``: every INT/FLOAT/STRING/BOOLEAN/combo input that is
  not ``forceInput`` is a widget, in the node's input order (required, then optional). Widgets the frontend
  adds without sending them fill a slot of ``widgets_values`` too: ``control_after_generate`` after an INT
  named ``seed``/``noise_seed`` or with that option (and after a combo with the option), the ``upload`` button
  after an ``image_upload`` combo.
- A connected input (socket or widget converted to a socket) takes ``[origin_id, origin_slot]``, following
  Reroute nodes, bypassed nodes (mode 4: the bypassed node's input of the same type) and PrimitiveNode
  widgets (their value).
- Frontend-only nodes (Note, MarkdownNote, Reroute, PrimitiveNode) and muted (mode 2) or bypassed nodes are
  left out; so are links from nodes that are left out.
- STRING widgets with ``dynamicPrompts`` get the frontend's processing: comments removed, ``{a|b}`` choices
  resolved (randomly, as the frontend does).
- ``_meta.title`` is the node's title, or the node's display name when the workflow keeps the default.

Subgraphs and group nodes are not supported (the pack's workflows use neither): they raise ``ValueError``.
"""
from __future__ import annotations

import random
import re
from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MODE_NEVER, MODE_BYPASS = 2, 4
# Combo options after which the frontend adds an upload button widget (its value is serialized, not sent).
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload", "model_upload")
SERIALIZED_ONLY = object()  # marks a widget slot that is saved in widgets_values but not sent to the server


def _input_order(spec: dict) -> list[tuple[str, Any]]:
    """(name, input spec) in the order the frontend creates inputs and widgets: required, then optional."""
    declared = spec.get("input", {})
    order = spec.get("input_order") or {k: list(v) for k, v in declared.items() if k != "hidden"}
    out = []
    for group in ("required", "optional"):
        for name in order.get(group, []):
            out.append((name, declared.get(group, {})[name]))
    return out


def is_widget(input_spec: Any) -> bool:
    kind = input_spec[0]
    options = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def widget_slots(spec: dict) -> list[tuple[str, Any]]:
    """The node's widgets in ``widgets_values`` order: (input name or SERIALIZED_ONLY label, input spec)."""
    slots: list[tuple[Any, Any]] = []
    for name, input_spec in _input_order(spec):
        if not is_widget(input_spec):
            continue
        kind = input_spec[0]
        options = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
        slots.append((name, input_spec))
        if kind == "INT":
            control = options.get("control_after_generate")
            if control is None:
                control = name in ("seed", "noise_seed")
            if control:
                slots.append((SERIALIZED_ONLY, "control_after_generate"))
        elif options.get("control_after_generate"):  # a combo with its own control widget
            slots.append((SERIALIZED_ONLY, "control_after_generate"))
        if (isinstance(kind, list) or kind == "COMBO") and any(options.get(k) for k in UPLOAD_OPTIONS):
            slots.append((SERIALIZED_ONLY, "upload"))
    return slots


def process_dynamic_prompt(text: str, rng: random.Random | None = None) -> str:
    """The frontend's dynamic prompt processing: strip /* */ and // comments, resolve {a|b|c} choices."""
    rng = rng or random.Random()
    text = re.sub(r"/\*[\s\S]*?\*/|//.*", "", text)
    pos = 0

    def escape() -> str:  # called with pos just past a backslash
        nonlocal pos
        ch = text[pos] if pos < len(text) else "undefined"  # (sic: the frontend reads past the end)
        pos += 1
        return "\\" + ch

    def choice_block() -> str:
        nonlocal pos
        options, current, depth = [], "", 0
        while pos < len(text):
            ch = text[pos]
            pos += 1
            if ch == "\\":
                current += escape()
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                if not depth:
                    break
                depth -= 1
            elif ch == "|" and not depth:
                options.append(current)
                current = ""
                continue
            current += ch
        options.append(current)
        return process_dynamic_prompt(rng.choice(options), rng)

    out = ""
    while pos < len(text):
        ch = text[pos]
        pos += 1
        if ch == "\\":
            out += escape()
        elif ch == "{":
            out += choice_block()
        else:
            out += ch
    return re.sub(r"\\([{}|])", r"\1", out)


def _links(workflow: dict) -> dict[int, dict]:
    out = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):  # schema version 1
            out[link["id"]] = link
        else:
            lid, origin_id, origin_slot, target_id, target_slot, kind = link[:6]
            out[lid] = dict(id=lid, origin_id=origin_id, origin_slot=origin_slot, target_id=target_id,
                            target_slot=target_slot, type=kind)
    return out


class _Resolver:
    """Follows a link back to the node output that really feeds it."""

    def __init__(self, nodes: dict[int, dict], links: dict[int, dict]):
        self.nodes, self.links = nodes, links

    def resolve(self, link_id: int, depth: int = 0) -> tuple[str, Any] | None:
        """('link', [origin_id, slot]) or ('value', widget value) or None when nothing feeds it."""
        if depth > 100:
            raise ValueError("link cycle through Reroute/bypassed nodes")
        link = self.links.get(link_id)
        if link is None:
            return None
        origin = self.nodes.get(link["origin_id"])
        if origin is None:
            return None
        kind, mode = origin["type"], origin.get("mode", 0)
        if kind == "Reroute":
            upstream = (origin.get("inputs") or [{}])[0].get("link")
            return None if upstream is None else self.resolve(upstream, depth + 1)
        if kind == "PrimitiveNode":
            values = origin.get("widgets_values") or [None]
            return ("value", values[0])
        if mode == MODE_BYPASS:
            # The frontend passes through the bypassed node's input at the output's slot index if it has the
            # same type, else its first input of that type.
            inputs = origin.get("inputs") or []
            wanted = link["type"]
            order = [link["origin_slot"]] + [i for i in range(len(inputs)) if i != link["origin_slot"]]
            for index in order:
                if index < len(inputs) and inputs[index].get("type") == wanted:
                    upstream = inputs[index].get("link")
                    return None if upstream is None else self.resolve(upstream, depth + 1)
            return None
        return ("link", [str(origin["id"]), int(link["origin_slot"])])


def convert(workflow: dict, object_info: dict, rng: random.Random | None = None) -> dict:
    """API-format prompt of a UI-format ``workflow``, using the server's ``object_info`` for the node inputs."""
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise ValueError("subgraphs are not supported by this converter")
    nodes = {n["id"]: n for n in workflow["nodes"]}
    resolver = _Resolver(nodes, _links(workflow))
    prompt: dict[str, dict] = {}
    for node in workflow["nodes"]:
        kind = node["type"]
        if kind in VIRTUAL_NODES or node.get("mode", 0) in (MODE_NEVER, MODE_BYPASS):
            continue
        if kind not in object_info:
            raise ValueError(f"node {node['id']}: type '{kind}' is not registered on the server (missing custom node?)")
        spec = object_info[kind]
        inputs: dict[str, Any] = {}
        values = node.get("widgets_values") or []
        if isinstance(values, dict):  # some packs save widget values by name
            values = [values.get(name) if name is not SERIALIZED_ONLY else None for name, _ in widget_slots(spec)]
        for (name, input_spec), value in zip(widget_slots(spec), values):
            if name is SERIALIZED_ONLY:
                continue
            options = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
            if input_spec[0] == "STRING" and options.get("dynamicPrompts") and isinstance(value, str):
                value = process_dynamic_prompt(value, rng)
            inputs[name] = {"__value__": value} if isinstance(value, list) else value
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            source = resolver.resolve(slot["link"])
            if source is None:
                continue
            what, value = source
            inputs[slot["name"]] = ({"__value__": value} if isinstance(value, list) else value) if what == "value" else value
        prompt[str(node["id"])] = {
            "inputs": inputs,
            "class_type": kind,
            "_meta": {"title": node.get("title") or spec.get("display_name") or kind},
        }
    for entry in prompt.values():  # links from nodes left out (muted, unknown) are dropped, as the frontend does
        for name, value in list(entry["inputs"].items()):
            if isinstance(value, list) and len(value) == 2 and value[0] not in prompt:
                del entry["inputs"][name]
    return prompt
