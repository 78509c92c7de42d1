"""Spaces pushed before the infer/ restructure import this path in their app.py; it stays for them."""

from infer.app.space import serve_lora_folder  # noqa: F401
