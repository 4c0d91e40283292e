"""Load on minicpmo-server with the tiny random-weight model (the converter's make_tiny, F32): what the
server adds over the in-process API, on this machine's cores.

1. Chat requests per second: --requests greedy text replies (--max-tokens tokens each) from
   --clients concurrent openai clients against --sessions sessions, and the same replies computed
   in-process on --sessions sessions of one model from as many threads (no HTTP).
2. Realtime units: --units duplex units (1 s of audio each, greedy, speech on) sent one at a time
   over the WebSocket, each waiting for its result and audio; the round trip against the in-process
   DuplexSession's prefill + generate of the same units.
3. Sessions held: --sessions realtime conversations at once, --units each; the process's peak RSS.

The clients run in the server's process (threads), so their own work (HTTP, JSON, the openai
client's parsing) shares the cores and the GIL with the server: the HTTP figures are an upper bound
on what the server adds.

Prints one JSON document on stdout; progress on stderr.

    python bench/server.py [--sessions 2] [--clients 4] [--requests 40] [--max-tokens 8] [--units 20]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench_common import cache_dir, cpu_name, proc_status_kib

REPO = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[bench/server] {msg}", file=sys.stderr, flush=True)


def tiny_model() -> Path:
    out = cache_dir() / "bench-server"
    llm = out / "gguf" / "MiniCPM-o-4_5-F32.gguf"
    if not llm.is_file():
        from minicpmo_cpp.convert import convert_checkpoint
        from minicpmo_cpp.convert.make_tiny import make_tiny_checkpoint

        vocab = next(cache_dir().glob("llama_cpp_python-*/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf"))
        log("making the tiny model")
        hf = make_tiny_checkpoint(out / "hf", seed=0, vocab_gguf=vocab)
        convert_checkpoint(hf, out / "gguf", outtype="f32", name="MiniCPM-o-4_5", quiet=True)
    return llm


def start_server(app):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


def units(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [(0.1 * rng.standard_normal(16000)).astype(np.float32) for _ in range(n)]


PREFIX, SUFFIX = "<|im_start|>system\nStreaming Omni Conversation.\n<|audio_start|>", "<|audio_end|><|im_end|>"


def in_process_units(session, pcm_units) -> list[float]:
    d = session.as_duplex(seed=5)
    d.prepare(PREFIX, SUFFIX)
    times = []
    for pcm in pcm_units:
        t = time.perf_counter()
        d.streaming_prefill(audio_waveform=pcm)
        d.streaming_generate(decode_mode="greedy")
        times.append(time.perf_counter() - t)
    d.as_simplex()
    return times


def ws_units(url: str, pcm_units) -> list[float]:
    from websockets.sync.client import connect

    times = []
    with connect(url.replace("http", "ws") + "/v1/realtime", max_size=None) as ws:
        ws.send(json.dumps({"type": "session.start", "decode_mode": "greedy", "seed": 5, "audio_format": "float32"}))
        json.loads(ws.recv())
        for pcm in pcm_units:
            t = time.perf_counter()
            ws.send(pcm.astype("<f4").tobytes())
            assert json.loads(ws.recv())["type"] == "unit.result"
            ws.recv()  # the unit's audio
            times.append(time.perf_counter() - t)
        ws.send(json.dumps({"type": "session.close"}))
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--units", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="threads per session")
    args = ap.parse_args()

    import openai

    from minicpmo_cpp import OmniSession
    from minicpmo_cpp.serve import ServerConfig, create_app

    llm = tiny_model()
    res: dict = {"cpu": cpu_name(), "model": "tiny random-weight MiniCPM-o (make_tiny, F32)", "args": vars(args)}
    first = OmniSession(str(llm), n_threads=args.threads, n_ctx=2048, kv_cache_type="f32")
    server, url = start_server(create_app(ServerConfig(model_path=str(llm), max_sessions=args.sessions,
                                                       max_queue=args.requests), first))
    prompts = [[{"role": "user", "content": f"Question {k}"}] for k in range(args.requests)]

    # 1. chat requests per second
    local = [OmniSession(str(llm), n_threads=args.threads, n_ctx=2048, kv_cache_type="f32")]
    local += [local[0].new_session() for _ in range(args.sessions - 1)]
    lock = threading.Lock()

    def ask_local(p):
        with lock:
            s = local.pop()
        try:
            return str(s.chat(p, do_sample=False, max_new_tokens=args.max_tokens))
        finally:
            with lock:
                local.append(s)

    clients = threading.local()  # one client (and its keep-alive connection) per thread

    def ask_http(p):
        if not hasattr(clients, "c"):
            clients.c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        return clients.c.chat.completions.create(model=llm.stem, messages=p, max_tokens=args.max_tokens,
                                         temperature=0).choices[0].message.content

    for name, fn, workers in (("in_process", ask_local, args.sessions), ("http", ask_http, args.clients)):
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(fn, prompts[:workers]))  # warm-up
            t = time.perf_counter()
            list(ex.map(fn, prompts))
            dt = time.perf_counter() - t
        res.setdefault("chat", {})[name] = {"seconds": dt, "requests_per_second": args.requests / dt}
        log(f"chat {name}: {args.requests / dt:.1f} requests/s")
    res["chat"]["http_over_in_process"] = res["chat"]["in_process"]["seconds"] and \
        res["chat"]["http"]["seconds"] / res["chat"]["in_process"]["seconds"]

    # 2. per-unit latency added by the WebSocket
    pcm = units(args.units)
    in_process_units(local[0], pcm[:2])
    ws_units(url, pcm[:2])  # warm-up
    a, b = in_process_units(local[0], pcm), ws_units(url, pcm)
    med = lambda x: float(np.median(x)) * 1e3  # noqa: E731
    res["realtime_unit_ms"] = {"in_process_median": med(a), "websocket_median": med(b),
                               "added_median": med(b) - med(a)}
    log(f"realtime unit: in-process {med(a):.1f} ms, WebSocket {med(b):.1f} ms")

    # 3. sessions held at once
    t = time.perf_counter()
    with ThreadPoolExecutor(args.sessions) as ex:
        list(ex.map(lambda _: ws_units(url, pcm), range(args.sessions)))
    dt = time.perf_counter() - t
    res["concurrent_realtime"] = {"conversations": args.sessions, "units_each": args.units, "seconds": dt,
                                  "units_per_second": args.sessions * args.units / dt}
    res["peak_rss_mib"] = proc_status_kib("VmHWM") / 1024
    log(f"{args.sessions} conversations at once: {args.sessions * args.units / dt:.1f} units/s")
    server.should_exit = True
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
