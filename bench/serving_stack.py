"""The inference service's serving stack, A/B: server CPU time per request, alternating configurations.

The model is replaced by an instant encoder (fixed random vectors), so what is measured is
the service around it: HTTP parsing, the event loop, the batcher's threads, JSON encoding of
the answer. Each configuration runs as its own server process, in alternating rounds; the
number is the server's CPU time (``/proc``) per request, which a busy machine disturbs far
less than throughput does. The client is a plain keep-alive socket (or a gRPC stub).

  --http   h11 | httptools     uvicorn's HTTP parser
  --loop   asyncio | uvloop    the event loop
  --json   std | orjson        /vectorize's encoder (json.dumps(array.tolist()) or orjson from numpy)

    python bench/serving_stack.py                       # lone 1-text requests, HTTP
    python bench/serving_stack.py --per 64              # 64 texts (64 x 384 floats back)
    python bench/serving_stack.py --grpc --configs h11,asyncio,orjson h11,uvloop,orjson
    python bench/serving_stack.py --grpc --clients 32 --configs httptools,uvloop,orjson

``--clients N`` (gRPC) has N concurrent callers (one grpc.aio channel, as the gateway has) instead of
one: the server's CPU per request under load, with batches of what arrives together. With an
instant encoder that is what serving one single-text request costs at that load (gRPC, the event
loop, the batcher's hand-offs), the floor under any real model's served CPU per text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_CONFIGS = ["h11,asyncio,std", "h11,asyncio,orjson", "httptools,asyncio,orjson",
                   "httptools,uvloop,orjson"]


# ------------------------------------------------------------------- the server (child process)
def serve(http: str, loop: str, encoder_json: str, dims: int) -> None:
    import numpy as np

    import services.inference.http_server as http_server
    import services.inference.main as inference_main
    import services.net as net
    from services.inference.config import InferenceSettings
    from services.inference.loaders.base import TEXT, Encoder, EncoderInfo

    if http == "h11":
        import uvicorn.protocols.http.auto as auto
        from uvicorn.protocols.http.h11_impl import H11Protocol

        auto.AutoHTTPProtocol = H11Protocol  # what uvicorn picks when httptools is not installed
        net.http_protocol.cache_clear()
    if encoder_json == "std":
        from fastapi.responses import JSONResponse

        http_server.vectors_response = lambda t, i: JSONResponse(
            {"textVectors": t.tolist(), "imageVectors": i.tolist()})

    class Instant(Encoder):
        def __init__(self) -> None:
            self.info = EncoderInfo("instant", "fake", dims, (TEXT,), "cpu", "fp32", True, 512)
            self.vectors = np.random.default_rng(0).standard_normal((1024, dims)).astype(np.float32)

        def prepare_texts(self, texts: list[str]) -> int:
            return len(texts)

        def forward_texts(self, n: int) -> np.ndarray:
            return self.vectors[:n]

    async def main() -> None:
        settings = InferenceSettings(model="instant", host="127.0.0.1", grpc_port=0, http_port=0,
                                     max_queue=100_000).validate()
        running = await inference_main.start_servers(Instant(), settings)
        print(running.http_port, running.grpc_port, flush=True)
        await asyncio.Event().wait()

    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())


# ------------------------------------------------------------------------------- the driver
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_caller(port: int, texts: list[str]):
    body = json.dumps({"texts": texts}).encode()
    request = (b"POST /vectorize HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call() -> None:
        sock.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(1 << 20)
        head, rest = buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
        length = next(int(v) for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:])
                      if k.strip().lower() == b"content-length")
        while len(rest) < length:
            rest += sock.recv(1 << 20)

    return call


def grpc_caller(port: int, texts: list[str]):
    import grpc

    from protos import inference_pb2, inference_pb2_grpc

    stub = inference_pb2_grpc.InferenceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    request = inference_pb2.VectorizeRequest(texts=texts)
    return lambda: stub.Vectorize(request)


def concurrent_grpc(port: int, texts: list[str], clients: int, requests: int) -> None:
    """``requests`` Vectorize calls from ``clients`` concurrent callers on one grpc.aio channel."""
    import grpc

    from protos import inference_pb2, inference_pb2_grpc

    async def run() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            request = inference_pb2.VectorizeRequest(texts=texts)
            left = requests

            async def caller() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    await stub.Vectorize(request)

            await asyncio.gather(*(caller() for _ in range(clients)))

    asyncio.run(run())


def drive(args) -> None:
    from bench.inference import make_texts

    texts = make_texts(args.per, seed=3)
    results: dict[str, list[tuple[float, float]]] = {c: [] for c in args.configs}
    for rnd in range(args.rounds):
        for config in args.configs:
            http, loop, encoder_json = config.split(",")
            proc = subprocess.Popen([sys.executable, __file__, "--serve", "--http", http, "--loop", loop,
                                     "--json", encoder_json], stdout=subprocess.PIPE, cwd=REPO)
            try:
                http_port, grpc_port = map(int, proc.stdout.readline().split())
                call = grpc_caller(grpc_port, texts) if args.grpc else http_caller(http_port, texts)
                for _ in range(20):
                    call()
                cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                if args.clients > 1:
                    concurrent_grpc(grpc_port, texts, args.clients, args.requests)
                else:
                    for _ in range(args.requests):
                        call()
                ms = (cpu_seconds(proc.pid) - cpu0) / args.requests * 1000
                rate = args.requests / (time.perf_counter() - t0)
            finally:
                proc.terminate()
                proc.wait()
            results[config].append((ms, rate))
            print(f"round {rnd + 1}  {config:26s} server {ms:6.3f} cpu-ms/request  {rate:7.1f} requests/s",
                  flush=True)
    what = f"{'gRPC' if args.grpc else 'HTTP keep-alive'}, {args.per} text(s) per request" + (
        f", {args.clients} concurrent clients" if args.clients > 1 else "")
    print(f"\n| {what} | server CPU ms / request (median of {args.rounds}) | vs first |\n|---|---|---|")
    first = statistics.median(x[0] for x in results[args.configs[0]])
    for config, runs in results.items():
        ms = statistics.median(x[0] for x in runs)
        print(f"| {config} | {ms:.3f} | {ms / first:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="http,loop,json triples")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--per", type=int, default=1, help="texts per request")
    p.add_argument("--grpc", action="store_true", help="gRPC Vectorize instead of HTTP /vectorize")
    p.add_argument("--clients", type=int, default=1, help="concurrent gRPC callers (needs --grpc)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--http", default="httptools", help=argparse.SUPPRESS)
    p.add_argument("--loop", default="uvloop", help=argparse.SUPPRESS)
    p.add_argument("--json", default="orjson", help=argparse.SUPPRESS)
    p.add_argument("--dims", type=int, default=384, help="vector size")
    args = p.parse_args()
    if args.clients < 1 or (args.clients > 1 and not args.grpc):
        p.error("--clients N needs --grpc and N >= 1")
    if args.serve:
        serve(args.http, args.loop, args.json, args.dims)
    else:
        drive(args)


if __name__ == "__main__":
    main()
