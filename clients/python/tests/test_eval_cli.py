"""``polyvec eval`` against a real gateway (HTTP front, QdrantStore, a real inference server with the
deterministic test encoder: texts are bags of words, images colour histograms, so the first hits are
known).

One BEIR set with text and image queries: ``--load`` creates the collection and imports the corpus
(image paths read and sent as base64); the table, ``--json`` and ``--plot`` come out; the numbers are
the ones the measures give for the rankings the gateway returns; bad inputs exit 2 naming the file line
or option.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from PIL import Image
from polyvec_client import Client
from polyvec_client.cli.main import main
from polyvec_client.eval import data, metrics

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}
CORPUS = [("apple", "red apple fruit", "red"), ("leaf", "green leaf plant", "green"),
          ("sea", "blue sea water", "blue"), ("banana", "yellow banana fruit", "yellow"),
          ("cherry", "red cherry fruit", "red")]
QUERIES = [{"_id": "q1", "text": "apple"}, {"_id": "q2", "text": "sea water"}, {"_id": "q3", "text": "fruit"},
           {"_id": "q4", "text": "not judged"}, {"_id": "i1", "image": "pictures/q-blue.png"},
           {"_id": "i2", "image": "pictures/q-green.png"}]
QRELS = ("query-id\tcorpus-id\tscore\nq1\tapple\t1\nq2\tsea\t1\nq3\tapple\t1\nq3\tbanana\t1\nq3\tcherry\t1\n"
         "i1\tsea\t1\ni2\tleaf\t1\n")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    from tests.gateway_thread import GatewayThread

    with GatewayThread(tmp_path_factory.mktemp("gw-eval"), "qdrant", inference_retry_budget_s=0,
                       inference_query_retry_budget_s=0) as gw:
        yield gw


def _png(path: Path, colour: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), COLOURS[colour]).save(path)
    return path.name


@pytest.fixture(scope="module")
def beir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("beir")
    with (folder / "corpus.jsonl").open("w") as corpus:
        for doc_id, title, colour in CORPUS:
            _png(folder / "pictures" / f"{doc_id}.png", colour)
            line = {"_id": doc_id, "title": title, "image": f"pictures/{doc_id}.png"}
            corpus.write(json.dumps(line) + "\n")
    _png(folder / "pictures" / "q-blue.png", "blue")
    _png(folder / "pictures" / "q-green.png", "green")
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    (folder / "qrels.tsv").write_text(QRELS)
    return folder


def _eval(gateway, capsys, *args: str) -> tuple[int, str, str]:
    code = main(["eval", *args[:1], "--url", gateway.http_url, *args[1:]], prog="polyvec")
    out, err = capsys.readouterr()
    return code, out, err


def test_load_then_table_json_and_plot(gateway, beir, tmp_path, capsys):
    name = f"e{uuid.uuid4().hex[:8]}"
    files = ["--queries", str(beir / "queries.jsonl"), "--qrels", str(beir / "qrels.tsv")]
    plot = tmp_path / "eval.png"
    code, out, err = _eval(gateway, capsys, name, *files, "--load", str(beir / "corpus.jsonl"),
                           "--model", "fake", "--text-fields", "title", "--image-fields", "image",
                           "--alphas", "0,1", "--fusion", "rrf", "--k", "1,3", "--plot", str(plot))
    assert code == 0, err
    assert f"created collection {name!r}" in err and "loaded 5 objects" in err
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:2] == ["run", "queries"]
    assert {"R@1", "R@3", "P@1", "P@3", "MRR@10", "nDCG@10", "MAP", "AvgRecall", "p50", "p99"} <= set(header)
    rows = [line.split("  ")[0].strip() for line in lines[1:] if line and not line[0].isspace()][:5]
    assert rows == ["near_text", "bm25", "hybrid alpha=0 rrf", "hybrid alpha=1 rrf", "near_image"]
    assert "5 judged queries (1 without relevant documents in the qrels skipped)" in out
    assert plot.read_bytes().startswith(b"\x89PNG") and Image.open(plot).size[0] > 600  # two panels

    with Client(gateway.http_url) as client:  # the objects went in with their pictures
        obj = client.collection(name).get("sea")
        assert obj.properties["title"] == "blue sea water" and len(obj.properties["image"]) > 40

    code, out, err = _eval(gateway, capsys, name, *files, "--alphas", "0,1", "--fusion", "rrf", "--k", "1,3",
                           "--json")
    assert code == 0, err
    report = json.loads(out)
    runs = {r["name"]: r for r in report["runs"]}
    assert report["queries"] == {"total": 6, "evaluated": 5, "without_qrels": 1, "text": 3, "image": 2}
    # the numbers are the measures of the rankings the gateway gives (one implementation: ir-measures);
    # every search asks for 10 hits at least (MRR@10, nDCG@10, R@10), though the largest K is 3
    assert report["depth"] == 10
    rankings = {}
    with Client(gateway.http_url) as client:
        search = client.collection(name).search
        for q in QUERIES[:3]:
            hits = search.run({"near_text": {"query": q["text"]}, "limit": 10}).hits
            rankings[q["_id"]] = [h.id for h in hits]
    assert runs["near_text"]["metrics"] == pytest.approx(
        metrics.compute(rankings, data.parse_qrels(QRELS), [1, 3], ["q1", "q2", "q3"]))
    # by hand, BM25: apple -> apple, sea water -> sea, fruit -> one of its three fruits; all in the top 3
    bm25 = runs["bm25"]["metrics"]
    assert bm25["R@1"] == pytest.approx((1 + 1 + 1 / 3) / 3) and bm25["R@3"] == pytest.approx(1.0)
    assert bm25["P@1"] == pytest.approx(1.0) and bm25["P@3"] == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)
    assert bm25["MRR@10"] == pytest.approx(1.0) and bm25["AvgRecall"] == pytest.approx((7 / 9 + 1) / 2)
    # the pictures: the blue query finds the sea, the green one the leaf
    assert runs["near_image"]["queries"] == 2
    assert runs["near_image"]["metrics"]["MRR@10"] == pytest.approx(1.0)
    # alpha 1 is the vector ranking, alpha 0 BM25's
    assert runs["hybrid alpha=1 rrf"]["metrics"] == pytest.approx(runs["near_text"]["metrics"])
    assert runs["hybrid alpha=0 rrf"]["metrics"] == pytest.approx(runs["bm25"]["metrics"])
    assert all(r["latency_ms"]["p99"] >= r["latency_ms"]["p50"] > 0 for r in report["runs"])
    assert report["latency"].startswith("end to end")


@pytest.mark.parametrize("change, message", [
    ({"qrels": "q1\tapple\t1\nq2\tsea\tyes\n"}, "qrels.tsv: line 2: score: must be an integer, got 'yes'"),
    ({"queries": '{"_id": "q1", "text": "apple"}\n{"text": "no id"}\n'}, "queries.jsonl: line 2: _id"),
    ({"queries": '{"_id": "q1", "image": "pictures/missing.png"}\n'}, "line 1: image: no such image file"),
    ({"args": ["--kinds", "near_txt"]}, "kinds: unknown kind 'near_txt'"),
    ({"args": ["--alphas", "0,1.5"]}, "alphas: 1.5 is not in [0, 1]"),
    ({"args": ["--load", "corpus.jsonl"]}, "--load: collection 'no-such-collection' does not exist"),
])
def test_bad_input_exits_2_naming_the_place(gateway, beir, tmp_path, capsys, change, message):
    queries, qrels = tmp_path / "queries.jsonl", tmp_path / "qrels.tsv"
    queries.write_text(change.get("queries", (beir / "queries.jsonl").read_text()))
    qrels.write_text(change.get("qrels", QRELS))
    (tmp_path / "pictures").symlink_to(beir / "pictures")
    (tmp_path / "corpus.jsonl").write_text((beir / "corpus.jsonl").read_text())
    args = [a if a != "corpus.jsonl" else str(tmp_path / a) for a in change.get("args", [])]
    code, out, err = _eval(gateway, capsys, "no-such-collection", "--queries", str(queries),
                           "--qrels", str(qrels), *args)
    assert code == 2, err
    assert message in err and out == ""


def test_a_missing_collection_is_the_gateways_404(gateway, beir, capsys):
    code, out, err = _eval(gateway, capsys, "no-such-collection", "--queries", str(beir / "queries.jsonl"),
                           "--qrels", str(beir / "qrels.tsv"))
    assert code == 1
    assert "polyvec eval:" in err and "no-such-collection" in err
