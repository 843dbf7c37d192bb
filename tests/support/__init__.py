"""Test support: the ComfyUI host server, its HTTP client, and small checkpoints built at test time."""
