"""The settings of one server process (``minicpmo-server`` flags)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerConfig:
    model_path: str
    omni_path: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None      # every route then needs "Authorization: Bearer <key>"
    max_sessions: int = 1           # conversations computing at once (each its own KV cache)
    max_queue: int = 8              # requests waiting for a session; more get 429
    queue_timeout: float = 120.0    # seconds a request waits for a session before 503
    retry_after: int = 2            # seconds, in the Retry-After header of 429 / 503
    n_threads: int | None = None    # threads per session (None: the library's default)
    n_ctx: int = 8192
    kv_cache_type: str = "f16"      # f32: exact parity with the float references, twice the memory
    device: str = "auto"
    n_gpu_layers: int = -1
    max_body_bytes: int = 32 << 20  # request bodies (JSON with base64 media, uploads); larger: 413
    media_root: str | None = None   # file:// URLs in requests are read only under this folder
    model_id: str | None = None     # the name clients pass as "model" (default: the model file's stem)

    @property
    def served_model_id(self) -> str:
        return self.model_id or os.path.splitext(os.path.basename(self.model_path))[0]
