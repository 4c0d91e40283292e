"""minicpmo-server as a Ray Serve deployment: ``num_replicas`` replicas (Ray actors, on any node of
the cluster), each loading the model once and running the same app as ``minicpmo-server`` (every
route, the realtime WebSocket and the page). Ray's proxy spreads HTTP requests over the replicas;
a WebSocket stays on the replica that accepted it for its whole life, so a realtime conversation
keeps its session (session affinity). Optional extra ``minicpmo-cpp[ray]``.

    serve run minicpmo_cpp.serve.ray_serve:app model=/models/MiniCPM-o-4_5-Q4_K_M.gguf num_replicas=2

or from Python: ``serve.run(deployment(ServerConfig(model_path=...), num_replicas=2))``.
"""

from __future__ import annotations

import dataclasses

from .config import ServerConfig


def deployment(config: ServerConfig, num_replicas: int = 2, ray_actor_options: dict | None = None):
    """The bound Ray Serve application of ``config`` (host and port are Ray's: ``serve.start``)."""
    from ray import serve

    def build():  # runs on each replica: the model loads there, once per replica
        from .app import create_app

        return create_app(config)

    ingress = serve.ingress(build)()
    return serve.deployment(name="minicpmo", num_replicas=num_replicas,
                            ray_actor_options=ray_actor_options or {})(ingress).bind()


def app(args: dict):
    """Application builder for ``serve run ...ray_serve:app key=value ...``: ``model`` (required),
    ``num_replicas`` (default 2), ``num_cpus`` per replica (default 1), and any ServerConfig field
    (``omni_path``, ``api_key``, ``max_sessions``, ``n_threads``, ``n_ctx``, ...)."""
    args = dict(args)
    if "model" not in args:
        raise ValueError("serve run minicpmo_cpp.serve.ray_serve:app needs model=PATH")
    replicas = int(args.pop("num_replicas", 2))
    cpus = float(args.pop("num_cpus", 1))
    fields = {f.name: f for f in dataclasses.fields(ServerConfig)}
    values = {"model_path": args.pop("model")}
    for key, value in args.items():
        if key not in fields or key == "model_path":
            raise ValueError(f"unknown setting {key!r}; ServerConfig has {', '.join(sorted(fields))}")
        convert = {"int": int, "int | None": int, "float": float}.get(str(fields[key].type), str)
        values[key] = convert(value)
    return deployment(ServerConfig(**values), replicas, {"num_cpus": cpus})
