"""Where hub downloads (Hugging Face, torch.hub) are cached, and whether their hosts can be reached at all.

A pretrained download without network access retries for about a minute before failing; asking once, briefly,
lets the caller fail in seconds with advice instead.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["PROBE_TIMEOUT_S", "hf_hub_cache_dir", "hf_hub_offline", "hub_reachable", "torch_hub_cached_file",
           "torch_hub_dir", "url_host"]

PROBE_TIMEOUT_S = 3.0
"""Seconds :func:`hub_reachable` waits for a host (name lookup and TCP connect together)."""

_TRUE = {"1", "on", "yes", "true"}


def hf_hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (the Hugging Face ecosystem's offline switch) is set, read now."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def torch_hub_dir() -> Path:
    """Where ``torch.hub`` keeps downloaded weights: ``<torch.hub.get_dir()>/checkpoints``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def torch_hub_cached_file(url: str) -> Path | None:
    """The file ``torch.hub.load_state_dict_from_url(url)`` would reuse (``<torch hub dir>/checkpoints/<name>``), or
    None when it is not there."""
    path = torch_hub_dir() / os.path.basename(urlparse(url).path)
    return path if path.is_file() else None


def url_host(url: str) -> str:
    """The host name of ``url`` (``download.pytorch.org``)."""
    return urlparse(url).hostname or url


def hub_reachable(host: str, *, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds, name lookup included.

    The lookup runs in a daemon thread so that a resolver that hangs without network cannot hold the caller
    longer than ``timeout``.
    """
    outcome: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=connect, name=f"probe {host}", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(outcome and outcome[0])
