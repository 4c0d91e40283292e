"""``minicpmo-server``: the OpenAI-compatible HTTP server over one loaded model (README "Server")."""

from __future__ import annotations

import argparse
import sys

from .config import ServerConfig


def parse_args(argv=None) -> ServerConfig:
    ap = argparse.ArgumentParser(prog="minicpmo-server", description=__doc__)
    ap.add_argument("-m", "--model", required=True, help="the LLM GGUF (the omni companion is found beside it)")
    ap.add_argument("--omni", default=None, help="the omni companion file, when it is not found from the LLM file")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every route")
    ap.add_argument("--max-sessions", type=int, default=1, help="conversations computing at once (default 1)")
    ap.add_argument("--max-queue", type=int, default=8, help="requests waiting for a session; more get 429")
    ap.add_argument("--queue-timeout", type=float, default=120.0, help="seconds a request waits before 503")
    ap.add_argument("-t", "--n-threads", type=int, default=None, help="threads per session")
    ap.add_argument("-c", "--n-ctx", type=int, default=8192, help="context size of each session")
    ap.add_argument("--kv-cache-type", default="f16", help="f16 (default), f32, bf16, q8_0 or q4_0")
    ap.add_argument("--device", default="auto", help="auto, cpu or a device name (minicpmo_cpp.device_names())")
    ap.add_argument("-ngl", "--n-gpu-layers", type=int, default=-1)
    ap.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body in MiB (default 32)")
    ap.add_argument("--media-root", default=None, help="allow file:// URLs in requests, under this folder only")
    ap.add_argument("--model-id", default=None, help="the model name clients send (default: the file's stem)")
    a = ap.parse_args(argv)
    if a.max_sessions < 1 or a.max_queue < 0 or a.queue_timeout <= 0 or a.max_body_mb <= 0:
        ap.error("--max-sessions must be >= 1, --max-queue >= 0, --queue-timeout and --max-body-mb > 0")
    return ServerConfig(model_path=a.model, omni_path=a.omni, host=a.host, port=a.port, api_key=a.api_key,
                        max_sessions=a.max_sessions, max_queue=a.max_queue, queue_timeout=a.queue_timeout,
                        n_threads=a.n_threads, n_ctx=a.n_ctx, kv_cache_type=a.kv_cache_type, device=a.device, n_gpu_layers=a.n_gpu_layers,
                        max_body_bytes=int(a.max_body_mb * (1 << 20)), media_root=a.media_root, model_id=a.model_id)


def main(argv=None) -> int:
    config = parse_args(argv)
    try:
        import uvicorn
    except ImportError:
        print("minicpmo-server needs the server extra: pip install 'minicpmo-cpp[server]'", file=sys.stderr)
        return 2
    from .app import create_app

    print(f"minicpmo-server: loading {config.model_path} ...", file=sys.stderr, flush=True)
    app = create_app(config)
    print(f"minicpmo-server: serving '{config.served_model_id}' on http://{config.host}:{config.port}",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
