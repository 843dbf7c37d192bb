"""Write the shared UI-format workflows ``workflows/*.json`` from their definitions (tests/support/workflow_defs.py).

    python3 tools/host.py python tools/make_workflows.py          # (re)write workflows/*.json
    python3 tools/host.py python tools/make_workflows.py --check  # exit 1 if a file is stale

It starts the host ComfyUI once for ``/object_info`` (input order, widgets), builds every workflow and writes
the files that differ. ``tests/test_workflows.py`` fails when a committed file differs from what the
definitions build, so edit the definitions, not the JSON.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.comfy_env import ROOT, import_comfy  # noqa: E402
from support.workflow_defs import build_all, dumps  # noqa: E402

WORKFLOWS = ROOT / "workflows"


def main(argv: list[str]) -> int:
    import_comfy()
    from support.server import ComfyServer

    server = ComfyServer(Path(tempfile.mkdtemp(prefix="prior-swap-workflows-")))
    server.start()
    try:
        info = server.get("/object_info")
    finally:
        server.stop()
    stale = []
    for name, workflow in build_all(info).items():
        path = WORKFLOWS / f"{name}.json"
        text = dumps(workflow)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.name)
        if "--check" not in argv:
            path.write_text(text)
    verb = "stale" if "--check" in argv else "written"
    print(f"{verb}: {', '.join(stale) or 'none'}")
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
