"""minicpmo-server on Ray Serve (python/minicpmo_cpp/serve/ray_serve.py): a local Ray cluster on this
machine, 2 replicas of the tiny model behind Ray's HTTP proxy, driven by the official openai client
and a WebSocket client; replies equal the in-process API's."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import openai
import pytest
import ray
from ray import serve
from websockets.sync.client import connect

from backend import SESSION
from minicpmo_cpp import OmniSession
from minicpmo_cpp.serve import ServerConfig
from minicpmo_cpp.serve.ray_serve import app as app_builder, deployment

HELLO = [{"role": "user", "content": "Hello"}]
MODEL = "MiniCPM-o-4_5-F32"


@pytest.fixture(scope="module")
def ray_url(tiny_f32):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        config = ServerConfig(model_path=str(tiny_f32[0]), n_threads=1, n_ctx=2048, kv_cache_type="f32",
                              device=SESSION["device"])
        serve.run(deployment(config, num_replicas=2, ray_actor_options={"num_cpus": 0.5}), route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_two_replicas_each_hold_the_model_and_serve(ray_url, tiny_f32):
    status = serve.status().applications["default"].deployments["minicpmo"]
    assert status.replica_states.get("RUNNING") == 2
    # Ray's proxy spreads requests: both replicas (two processes, each with its own model) answer
    pids = set()
    deadline = time.time() + 60
    while len(pids) < 2:
        assert time.time() < deadline, f"only replica(s) {pids} answered"
        pids.add(json.loads(__import__("urllib.request").request.urlopen(ray_url + "/health").read())["pid"])
    ref = OmniSession(str(tiny_f32[0]), n_threads=1, **SESSION, n_ctx=2048, kv_cache_type="f32")
    prompts = [[{"role": "user", "content": f"Count to {k}"}] for k in range(4)]
    want = [str(ref.chat(p, do_sample=False, max_new_tokens=8)) for p in prompts]
    c = openai.OpenAI(base_url=ray_url + "/v1", api_key="unused", max_retries=0)
    got = [c.chat.completions.create(model=MODEL, messages=p, max_tokens=8, temperature=0).choices[0].message.content
           for p in prompts]
    assert got == want
    chunks = c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, temperature=0, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == \
        str(ref.chat(HELLO, do_sample=False, max_new_tokens=8))


def test_a_realtime_conversation_stays_on_its_replica(ray_url):
    rng = np.random.default_rng(3)
    with connect(ray_url.replace("http", "ws") + "/v1/realtime", max_size=None, open_timeout=60) as ws:
        ws.send(json.dumps({"type": "session.start", "decode_mode": "greedy", "seed": 5}))
        assert json.loads(ws.recv(timeout=60))["type"] == "session.started"
        for k in range(3):
            ws.send(np.round(rng.standard_normal(16000) * 3000).astype("<i2").tobytes())
            result = json.loads(ws.recv(timeout=120))
            # one conversation: unit numbers and heard time run on without a gap, which they could
            # not if a unit had gone to the other replica's sessions
            assert result["type"] == "unit.result" and result["current_time"] == k + 1, result
            assert len(ws.recv(timeout=120)) >= 2 * 24000


def test_serve_run_builder_checks_its_arguments(tiny_f32):
    with pytest.raises(ValueError, match="model=PATH"):
        app_builder({})
    with pytest.raises(ValueError, match="unknown setting 'colour'"):
        app_builder({"model": str(tiny_f32[0]), "colour": "blue"})
    assert app_builder({"model": str(tiny_f32[0]), "num_replicas": "2", "max_sessions": "3"}) is not None
