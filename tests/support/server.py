"""Start the real ComfyUI host on a free loopback port and talk to it through its HTTP API."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from .comfy_env import ROOT, comfy_dir

PACK_NAME = "comfyui-prior-swap"


def prior_calls(log: str) -> list[tuple[int, int]]:
    """(prior calls, model calls) of each sampling run in a server's ``log``, from the pack's INFO line.

    A run in the server process reports its counts nowhere else (in the test process, tests read the fast
    path's GraphCache counters instead)."""
    return [(int(a), int(b)) for a, b in re.findall(r"prior evaluated at (\d+) of (\d+) model calls", log)]

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the server's process: get SIGTERM when the test process dies, so no server outlives a killed run."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ExecutionError(RuntimeError):
    """A prompt that ComfyUI refused or that failed while executing; ``info`` holds ComfyUI's report."""

    def __init__(self, message: str, info: Any):
        super().__init__(message)
        self.info = info


class ComfyServer:
    """A ComfyUI process with its own base directory (models, custom_nodes, input, output, user).

    The pack is linked into ``<base>/custom_nodes``; the host's own custom_nodes folder is not loaded,
    so a user's ComfyUI (``COMFYUI_DIR``) is used without being changed.
    """

    def __init__(self, base: Path, python: str | None = None, extra_args: list[str] | None = None):
        self.base = base
        self.python = python or os.environ.get("COMFYUI_PYTHON") or sys.executable
        self.extra_args = extra_args or []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None
        self.log_path = base / "comfyui.log"
        for sub in ("custom_nodes", "models/checkpoints", "input", "output", "user", "temp"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        link = base / "custom_nodes" / PACK_NAME
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)

    @property
    def checkpoints(self) -> Path:
        return self.base / "models" / "checkpoints"

    @property
    def output(self) -> Path:
        return self.base / "output"

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        args = [self.python, "main.py", "--listen", "127.0.0.1", "--port", str(self.port),
                "--base-directory", str(self.base), "--database-url", "sqlite:///:memory:",
                "--disable-auto-launch", "--dont-print-server", *self.extra_args]
        try:
            import torch
            if not torch.cuda.is_available():
                args.append("--cpu")
        except ImportError:
            args.append("--cpu")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, cwd=comfy_dir(), stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/system_stats", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    # -- API -------------------------------------------------------------------------------------
    def get(self, path: str, **kw) -> Any:
        r = requests.get(self.url + path, timeout=kw.pop("timeout", 30), **kw)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, payload: dict | None = None) -> requests.Response:
        return requests.post(self.url + path, json=payload or {}, timeout=30)

    def queue(self, prompt: dict) -> str:
        """POST /prompt; returns the prompt id or raises ExecutionError with ComfyUI's validation report."""
        r = self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})
        body = r.json()
        if r.status_code != 200:
            raise ExecutionError(f"prompt refused: {json.dumps(body)[:2000]}", body)
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """Wait for a prompt in /history; returns its entry or raises ExecutionError if it failed."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                hist = self.get(f"/history/{prompt_id}", timeout=60)
            except requests.Timeout:  # a busy CPU can stall the server's event loop; ask again
                continue
            if prompt_id in hist:
                entry = hist[prompt_id]
                status = entry.get("status", {})
                if status.get("completed") or status.get("status_str") in ("success", "error"):
                    if status.get("status_str") == "error":
                        messages = [m for m in status.get("messages", []) if m[0] == "execution_error"]
                        detail = messages[0][1] if messages else status
                        raise ExecutionError(f"execution failed: {json.dumps(detail)[:3000]}", detail)
                    return entry
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died:\n{self.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        """Queue a prompt and wait for it; returns its /history entry."""
        return self.wait(self.queue(prompt), timeout)

    def output_files(self, entry: dict, kind: str = "images") -> list[Path]:
        """Paths of the files a finished prompt wrote (``images`` or ``latents``)."""
        files = []
        for node_out in entry.get("outputs", {}).values():
            for item in node_out.get(kind, []):
                files.append(self.output / item.get("subfolder", "") / item["filename"])
        return files
