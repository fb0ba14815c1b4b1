"""Fault suite: real processes on loopback, free ports, killed with SIGKILL.

* kill -9 of the inference service during imports: every object is either stored or reported failed,
  and the store holds exactly the objects reported ``ok``;
* an inference service restarted (by ``polyvec up``'s supervisor) inside the retry budget: the imports
  that were waiting for it complete;
* kill -9 of the gateway on the embedded store: every acknowledged object survives a restart;
* overload: a crowd of searches gets 200s and 429s with Retry-After, never a 5xx, and the gateway
  serves normally afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.service.vectors import object_uuid
from gateway.storage.edge_store import EdgeStore
from services.up import Child, ModelConfig, free_port, supervise
from tests.gateway_support import InferenceUnderTest
from tests.model_factories import build_sentence_transformers_folder

REPO = Path(__file__).resolve().parents[1]
NOTES = {"name": "notes", "vectorizers": {"main": {"model": "m", "text_fields": ["text"]}}}


def run(coro, timeout: float = 300):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> ModelConfig:
    folder = build_sentence_transformers_folder(tmp_path_factory.mktemp("faults") / "st")
    spec = {"name": "tiny-st", "type": "sentence_transformers", "localpath": str(folder)}
    return ModelConfig(name="m", model_properties=json.dumps(spec),
                       env={"HF_HUB_OFFLINE": "1", "LOG_LEVEL": "WARNING"})


async def until(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await _maybe_await(predicate()):
        assert time.monotonic() < deadline, f"{what} not reached within {timeout:g} s"
        await asyncio.sleep(0.05)


async def _maybe_await(value):
    return await value if asyncio.iscoroutine(value) else value


class GatewayProcess:
    """``polyvec gateway`` as a child process on a free loopback port (embedded store in ``data_dir``)."""

    def __init__(self, data_dir: Path, log: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.log = log
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self) -> GatewayProcess:
        port = free_port()
        env = {k: v for k, v in os.environ.items()
               if k not in ("QDRANT_URL", "MODELS", "API_KEYS", "HTTP_PORT", "GRPC_PORT")}
        env.update({"DATA_DIR": str(self.data_dir), "HOST": "127.0.0.1", "HTTP_PORT": str(port),
                    "GRPC_PORT": "off", "LOG_LEVEL": "WARNING",
                    "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", "")}, **self.env)
        with open(self.log, "ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.cli", "gateway", cwd=REPO, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            async def healthy() -> bool:
                assert self.proc.returncode is None, self.log.read_text()
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await until(healthy, what="gateway /healthz")
        return self

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                await self.kill()


async def start_child(model: ModelConfig) -> Child:
    child = Child(model, free_port(), quiet=True)
    await child.start()
    await until(child.serving, what="inference health SERVING")
    return child


def batch(k: int, size: int) -> dict:
    return {"objects": [{"id": f"b{k}-{i}", "properties": {"text": f"note {i} of batch {k}"}}
                        for i in range(size)]}


async def import_stream(url: str, batches: int, size: int, responses: list, *,
                        stop_after_failures: int = 0) -> None:
    """Send import requests back to back, recording (batch, status, body); stop after N failed ones."""
    failures = 0
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        for k in range(batches):
            r = await http.post("/v1/collections/notes/objects", json=batch(k, size))
            responses.append((k, r.status_code, r.json()))
            if r.status_code != 200:
                failures += 1
                if stop_after_failures and failures >= stop_after_failures:
                    return


def stored_ids(data_dir: Path, candidates: list[str]) -> set[str]:
    """The ids among ``candidates`` that the embedded store holds (read with the gateway stopped)."""
    store = EdgeStore(data_dir)
    try:
        by_uuid = {object_uuid(i): i for i in candidates}
        return {by_uuid[rec.id] for rec in store.retrieve("notes", list(by_uuid))}
    finally:
        store.close()


def test_inference_kill_9_during_imports(tiny_model, tmp_path):
    """One inference child, two gateways on it (each with its own embedded store):

    1. gateway A (retry budget 240 s), the child supervised as ``polyvec up`` does it: kill -9 while
       imports stream in; the child is restarted and every import completes, every object stored;
    2. gateway B (retry budget 1 s), no supervisor any more: kill -9 while imports stream in; every
       object is either stored or reported failed, and B's store holds exactly the ``ok`` ones.
    """
    size = 20

    async def scenario():
        child = await start_child(tiny_model)
        stop = asyncio.Event()
        supervisor = asyncio.create_task(supervise(child, stop.is_set, base_delay_s=0.1))
        patient = GatewayProcess(tmp_path / "a", tmp_path / "a.log", MODELS=f"m={child.address}",
                                 INFERENCE_RETRY_BUDGET_S="240", INFERENCE_BATCH_SIZE="8")
        hasty = GatewayProcess(tmp_path / "b", tmp_path / "b.log", MODELS=f"m={child.address}",
                               INFERENCE_RETRY_BUDGET_S="1", INFERENCE_BATCH_SIZE="8")
        survived: list = []
        reported: list = []
        try:
            await asyncio.gather(patient.start(), hasty.start())
            for gateway in (patient, hasty):
                async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
                    assert (await http.post("/v1/collections", json=NOTES)).status_code == 201
            # 1. a restart inside the budget
            stream = asyncio.create_task(import_stream(patient.url, 8, size, survived))
            await until(lambda: len(survived) >= 2, what="two imports answered")
            answered_before_kill = len(survived)
            first_pid = child.proc.pid
            child.proc.kill()
            await until(lambda: child.restarts == 1 and child.proc.pid != first_pid, what="restart")
            await stream
            async with httpx.AsyncClient(base_url=patient.url, timeout=60) as http:
                metrics = (await http.get("/metrics")).text
            # 2. down for good
            stop.set()
            await asyncio.wait_for(supervisor, 60)
            await until(child.serving, what="the restarted child serving")
            stream = asyncio.create_task(import_stream(hasty.url, 60, size, reported, stop_after_failures=2))
            await until(lambda: len(reported) >= 3, what="three imports answered")
            child.proc.kill()
            await child.proc.wait()
            await stream
        finally:
            stop.set()
            await asyncio.gather(patient.stop(), hasty.stop())
            await child.stop()
        return survived, answered_before_kill, metrics, reported

    survived, answered_before_kill, metrics, reported = run(scenario())

    # 1. every import completed and every object is stored
    assert [status for _, status, _ in survived] == [200] * 8
    assert all(body["ok"] == size for _, _, body in survived)
    assert answered_before_kill < 8  # imports were still being sent when the service went down
    retries = [line for line in metrics.splitlines()
               if line.startswith("polyvec_gateway_inference_retries_total{")]
    assert retries and float(retries[0].rsplit(" ", 1)[1]) > 0  # the gateway waited for the restart
    all_ids = [f"b{k}-{i}" for k in range(8) for i in range(size)]
    assert stored_ids(tmp_path / "a", all_ids) == set(all_ids)

    # 2. stored or reported failed, and the store holds exactly the objects reported ok
    statuses = [status for _, status, _ in reported]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[:3] == [200, 200, 200] and statuses[-2:] == [503, 503]
    ok, failed = set(), set()
    for k, status, body in reported:
        ids = {f"b{k}-{i}" for i in range(size)}
        if status == 200:
            assert {r["id"] for r in body["results"]} == ids
            ok |= {r["id"] for r in body["results"] if r["status"] == "ok"}
            failed |= {r["id"] for r in body["results"] if r["status"] != "ok"}
        else:
            assert body["service"].startswith("inference service for model 'm'"), body
            assert "unavailable" in body["error"], body
            failed |= ids  # a 503 wrote nothing of its request
    assert stored_ids(tmp_path / "b", sorted(ok | failed)) == ok
    assert len(ok) >= 3 * size


def test_gateway_killed_keeps_every_acknowledged_object(tmp_path):
    async def scenario():
        data = tmp_path / "data"
        gateway = GatewayProcess(data, tmp_path / "gateway.log")
        acknowledged: list[str] = []
        await gateway.start()
        try:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
                r = await http.post("/v1/collections", json={"name": "notes",
                                                             "vectorizers": {"own": {"dimensions": 4}}})
                assert r.status_code == 201, r.text

                async def writer() -> None:
                    for k in range(10_000):
                        body = {"objects": [{"id": f"w{k}-{i}", "properties": {"k": k},
                                             "vectors": {"own": [k + 1.0, i + 1.0, 1.0, 0.5]}}
                                            for i in range(20)]}
                        try:
                            r = await http.post("/v1/collections/notes/objects", json=body)
                        except httpx.HTTPError:
                            return  # the gateway died with this request in flight: not acknowledged
                        assert r.status_code == 200 and r.json()["ok"] == 20, r.text
                        acknowledged.extend(o["id"] for o in body["objects"])

                task = asyncio.create_task(writer())
                await until(lambda: len(acknowledged) >= 200, what="200 acknowledged objects")
                await gateway.kill()
                await task
        finally:
            await gateway.stop()
        restarted = GatewayProcess(data, tmp_path / "gateway2.log")
        await restarted.start()
        try:
            async with httpx.AsyncClient(base_url=restarted.url, timeout=60) as http:
                count = (await http.get("/v1/collections/notes")).json()["count"]
                missing = [i for i in acknowledged
                           if (await http.get(f"/v1/collections/notes/objects/{i}")).status_code != 200]
        finally:
            await restarted.stop()
        return acknowledged, count, missing

    acknowledged, count, missing = run(scenario())
    assert missing == []
    assert len(acknowledged) <= count <= len(acknowledged) + 20  # + at most the request in flight


def test_overload_is_429_with_retry_after_never_5xx_and_recovers(tmp_path):
    async def scenario():
        async with InferenceUnderTest() as inference:
            gateway = GatewayProcess(tmp_path / "data", tmp_path / "gateway.log",
                                     MODELS=f"m={inference.address}", INFERENCE_CONCURRENCY="1",
                                     INFERENCE_MAX_WAITING="3")
            await gateway.start()
            try:
                limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
                async with httpx.AsyncClient(base_url=gateway.url, timeout=120, limits=limits) as http:
                    assert (await http.post("/v1/collections", json=NOTES)).status_code == 201
                    r = await http.post("/v1/collections/notes/objects", json=batch(0, 5))
                    assert r.json()["ok"] == 5
                    inference.encoder.gate.clear()  # the model stalls
                    search = {"near_text": {"query": "note 3 of batch 0"}, "limit": 1}
                    crowd = [asyncio.create_task(http.post("/v1/collections/notes/search", json=search))
                             for _ in range(40)]
                    await until(lambda: sum(t.done() for t in crowd) >= 36, what="36 answers")
                    shed = [t.result() for t in crowd if t.done()]
                    inference.encoder.gate.set()
                    served = [await t for t in crowd]
                    after = await http.post("/v1/collections/notes/search", json=search)
                    metrics = (await http.get("/metrics")).text
            finally:
                inference.encoder.gate.set()
                await gateway.stop()
        return shed, served, after, metrics

    shed, served, after, metrics = run(scenario())
    assert all(r.status_code == 429 for r in shed)
    assert all(int(r.headers["retry-after"]) >= 1 and r.json()["service"] for r in shed)
    statuses = sorted(r.status_code for r in served)
    assert statuses == [200] * 4 + [429] * 36  # 1 in flight + 3 waiting were served, the rest shed
    assert after.status_code == 200 and after.json()["hits"][0]["id"] == "b0-3"
    assert 'polyvec_gateway_inference_shed_total' in metrics
