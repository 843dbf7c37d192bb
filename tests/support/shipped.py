"""What the pack ships: the tracked files minus .comfyignore's patterns, matched as comfy-cli matches them."""
from __future__ import annotations

import fnmatch
import subprocess

from .comfy_env import ROOT


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (ROOT / p).exists()]


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".comfyignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """gitwildmatch (what comfy-cli applies through pathspec) for the forms .comfyignore uses: no negation, no **.

    A leading or inner / anchors at the root; a trailing / matches directories only; a pattern matches the
    path or any folder above it.
    """
    parts = path.split("/")
    for pattern in patterns:
        assert not pattern.startswith("!") and "**" not in pattern, f"extend this matcher for {pattern!r}"
        directory_only = pattern.endswith("/")
        segments = pattern.strip("/").split("/")
        anchored = pattern.startswith("/") or len(segments) > 1
        for first in ([0] if anchored else range(len(parts))):
            last = first + len(segments)  # parts[first:last] must match the segments
            if last > len(parts) - (1 if directory_only else 0):
                continue
            if all(fnmatch.fnmatchcase(part, seg) for part, seg in zip(parts[first:last], segments)):
                return True
    return False


def shipped() -> set[str]:
    patterns = ignore_patterns()
    return {p for p in tracked_files() if not ignored(p, patterns)}
