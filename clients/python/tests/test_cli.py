"""``polyvec import | export | search | collections`` against a real gateway (both storage adapters; the
round trip and the search table over HTTP and over gRPC, ``--url grpc://HOST:PORT``)."""

from __future__ import annotations

import base64
import csv
import json
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import child_env
from PIL import Image
from polyvec_client import Client
from polyvec_client.cli.main import main

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def cli(gateway, *args: str, capsys=None) -> tuple[int, str, str]:
    """Run the command line against ``gateway`` (a running gateway: its HTTP API; or a URL)."""
    code = main([args[0], "--url", gateway if isinstance(gateway, str) else gateway.http_url, *args[1:]])
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return code, out, err


def name() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


def create(gateway, collection: str, **vectorizer) -> None:
    with Client(gateway.http_url) as client:
        client.collections.create(collection, vectorizers={"main": {"model": "fake", **vectorizer}})


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def objects_of(gateway, collection: str, **kwargs) -> dict[str, dict]:
    with Client(gateway.http_url) as client:
        return {o.id: o for o in client.collection(collection).iterate(**kwargs)}


def test_import_jsonl_failed_file_and_reimport(gateway, tmp_path, capsys):
    col = name()
    create(gateway, col, text_fields=["title"], image_fields=["photo"])
    rows = [{"id": f"p{i}", "properties": {"title": f"product {i}", "price": i}} for i in range(40)]
    rows[3] = {"sku": "flat-3", "title": "a flat record", "price": 3}  # flat records work too
    rows[5]["properties"]["photo"] = "bm90IGFuIGltYWdl"  # base64 of "not an image": the model refuses it
    rows.insert(10, "{not json")
    src = write_jsonl(tmp_path / "data.jsonl", rows)
    code, out, err = cli(gateway, "import", col, str(src), "--id-field", "sku", "--batch-size", "7",
                         capsys=capsys)
    # "sku" is only in the flat record: the others are objects with their own ids
    assert code == 1, (out, err)
    assert "imported 39 objects" in out and "2 failed" in out, out
    failed = [json.loads(line) for line in (tmp_path / "data.jsonl.failed.jsonl").read_text().splitlines()]
    assert len(failed) == 2
    bad_json = next(f for f in failed if "_raw" in f)
    assert bad_json["_raw"] == "{not json" and "not valid JSON" in bad_json["_error"]["error"]
    bad_image = next(f for f in failed if "_raw" not in f)
    assert bad_image["id"] == "p5" and bad_image["_error"]["field"] == "properties.photo"
    with Client(gateway.http_url) as client:
        assert client.collection(col).count() == 39
        assert client.collection(col).get("flat-3").properties == {"sku": "flat-3", "title": "a flat record",
                                                                   "price": 3}
    # fix the failed object and import the failed file as it is (its _error is ignored)
    fixed = tmp_path / "fixed.jsonl"
    del bad_image["properties"]["photo"]
    write_jsonl(fixed, [bad_image])
    code, out, _ = cli(gateway, "import", col, str(fixed), capsys=capsys)
    assert code == 0 and "imported 1 objects" in out and "0 failed" in out
    with Client(gateway.http_url) as client:
        assert client.collection(col).count() == 40


def test_import_stdin_and_resume(gateway, tmp_path, capsys):
    col = name()
    create(gateway, col, text_fields=["title"])
    lines = [json.dumps({"id": f"s{i}", "title": f"stdin {i}"}) + "\n" for i in range(30)]
    proc = subprocess.run([sys.executable, "-m", "polyvec_client", "import", col, "-", "--url",
                           gateway.http_url], input="".join(lines[:15]), capture_output=True, text=True,
                          env=child_env(), timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with Client(gateway.http_url) as client:
        first = client.collection(col).count()
    assert first == 15 and "imported 15 objects" in proc.stdout
    src = write_jsonl(tmp_path / "all.jsonl", [json.loads(x) for x in lines])
    code = main(["import", col, str(src), "--resume", "--url", gateway.http_url])
    assert code == 0 and "15 skipped (already present)" in capsys.readouterr().out
    with Client(gateway.http_url) as client:
        assert client.collection(col).count() == 30


def test_import_csv_tsv_typed_columns(gateway, tmp_path, capsys):
    col = name()
    create(gateway, col, text_fields=["title"])
    path = tmp_path / "items.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "price", "stock", "active", "code", "tags"])
        w.writerow(["a1", "red lamp, with a comma", "19.5", "3", "true", "007", '["x", "y"]'])
        w.writerow(["a2", "blue chair", "20", "", "false", "010", "[]"])
        w.writerow(["a3", "multi\nline title", "7", "12", "yes", "9", '["z"]'])
    code, out, err = cli(gateway, "import", col, str(path), "--type", "code=str", "--type", "tags=json",
                         capsys=capsys)
    assert code == 0, (out, err)
    got = objects_of(gateway, col)
    assert got["a1"].properties == {"title": "red lamp, with a comma", "price": 19.5, "stock": 3,
                                    "active": True, "code": "007", "tags": ["x", "y"]}
    assert got["a2"].properties["price"] == 20.0 and "stock" not in got["a2"].properties
    assert got["a3"].properties["title"] == "multi\nline title" and got["a3"].properties["active"] is True
    tsv = tmp_path / "items.tsv"
    tsv.write_text("id\ttitle\tprice\nt1\ttab separated\t5\nt2\tbad price\tcheap\n")
    code, out, err = cli(gateway, "import", col, str(tsv), "--type", "price=int", capsys=capsys)
    assert code == 1 and "1 failed" in out
    failed = json.loads((tmp_path / "items.tsv.failed.jsonl").read_text())
    assert failed["_error"]["field"] == "properties.price"
    assert "'cheap' is not a int" in failed["_error"]["error"]
    assert objects_of(gateway, col)["t1"].properties == {"title": "tab separated", "price": 5}
    code, _, err = cli(gateway, "import", col, str(tsv), "--type", "nope=int", capsys=capsys)
    assert code == 2 and "nope" in err


def test_import_parquet_and_missing_pyarrow(gateway, tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    col = name()
    create(gateway, col, text_fields=["title"])
    table = pa.table({"id": [f"q{i}" for i in range(25)],
                      "title": [f"parquet row {i}" for i in range(25)],
                      "score": [i / 2 for i in range(25)],
                      "maybe": [None if i % 2 else i for i in range(25)]})
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path)
    code, out, err = cli(gateway, "import", col, str(path), capsys=capsys)
    assert code == 0, (out, err)
    got = objects_of(gateway, col)
    assert len(got) == 25 and got["q4"].properties == {"title": "parquet row 4", "score": 2.0, "maybe": 4}
    assert "maybe" not in got["q3"].properties
    # without pyarrow: a clear message, no traceback
    script = ("import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None\n"
              "from polyvec_client.cli.main import main\n"
              f"sys.exit(main(['import', {col!r}, {str(path)!r}, '--url', {gateway.http_url!r}]))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=child_env(),
                          timeout=120)
    assert proc.returncode == 2 and "needs pyarrow" in proc.stderr and "pip install" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_import_image_folder_with_captions_and_create(gateway, tmp_path, capsys):
    folder = tmp_path / "pictures"
    (folder / "sub").mkdir(parents=True)
    for colour, rel in [("red", "red.png"), ("blue", "sub/blue.jpg"), ("green", "green.png")]:
        Image.new("RGB", (24, 24), COLOURS[colour]).save(folder / rel)
    (folder / "red.txt").write_text("a bright red square\n")
    (folder / "captions.csv").write_text("filename,caption\nsub/blue.jpg,a deep blue square\n")
    (folder / "notes.md").write_text("not an image")
    col = name()
    code, out, err = cli(gateway, "import", col, str(folder), "--create", "--model", "fake", capsys=capsys)
    assert code == 0, (out, err)
    assert "created collection" in out and "imported 3 objects" in out
    got = objects_of(gateway, col)
    assert set(got) == {"red.png", "sub/blue.jpg", "green.png"}
    assert got["red.png"].properties["caption"] == "a bright red square"
    assert got["sub/blue.jpg"].properties["caption"] == "a deep blue square"
    assert "caption" not in got["green.png"].properties
    assert got["sub/blue.jpg"].properties["filename"] == "blue.jpg"
    assert base64.b64decode(got["green.png"].properties["image"])[:4] == b"\x89PNG"
    query = tmp_path / "q.png"
    Image.new("RGB", (10, 10), (200, 20, 20)).save(query)
    code, out, _ = cli(gateway, "search", col, str(query), "--kind", "near_image", "--limit", "1", "--json",
                       capsys=capsys)
    assert code == 0 and json.loads(out)["hits"][0]["id"] == "red.png"
    code, out, _ = cli(gateway, "search", col, "deep blue", "--kind", "hybrid", "--alpha", "0.2",
                       "--properties", "caption,image", capsys=capsys)
    assert code == 0
    first = out.splitlines()[2]
    assert "sub/blue.jpg" in first and "a deep blue square" in first and "chars>" in first


def test_export_round_trip(gateway, url, tmp_path, capsys):
    source = name()
    create(gateway, source, text_fields=["title"])
    rows = [{"id": f"e{i}", "properties": {"title": f"export me {i}", "n": i, "nested": {"k": [i, "v"]},
                                           "flag": i % 2 == 0, "price": i + 0.25}} for i in range(120)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    assert cli(url, "import", source, str(src), capsys=capsys)[0] == 0
    out_path = tmp_path / "out.jsonl"
    code = main(["export", source, "--with-vectors", "-o", str(out_path), "--batch-size", "50", "--url",
                 url])
    assert code == 0
    exported = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert len(exported) == 120 and set(exported[0]) == {"id", "properties", "vectors"}
    target = name()
    create(gateway, target, text_fields=["title"])
    code, out, _ = cli(url, "import", target, str(out_path), capsys=capsys)
    assert code == 0 and "imported 120 objects" in out
    a = objects_of(gateway, source, with_vectors=True)
    b = objects_of(gateway, target, with_vectors=True)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].properties == b[key].properties
        assert a[key].vectors.keys() == b[key].vectors.keys() == {"main"}
        assert a[key].vectors["main"] == pytest.approx(b[key].vectors["main"], rel=1e-6)
    # to stdout, with a filter, without vectors
    code, out, _ = cli(url, "export", source, "--filter", '{"n": {"lt": 3}}', capsys=capsys)
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and sorted(x["id"] for x in lines) == ["e0", "e1", "e2"] and "vectors" not in lines[0]


def test_progress_lines_when_not_a_terminal(gateway, tmp_path):
    col = name()
    create(gateway, col, text_fields=["title"])
    src = write_jsonl(tmp_path / "p.jsonl", [{"id": f"x{i}", "title": f"line {i}"} for i in range(300)])
    # through the server's `polyvec` command, which hands import/export/search/collections to the client
    proc = subprocess.run([sys.executable, "-m", "services.cli", "import", col, str(src), "--url",
                           gateway.http_url, "--batch-size", "20", "--concurrency", "1",
                           "--progress-interval", "0"], capture_output=True, text=True, env=child_env(),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith(f"import {col}:")]
    assert len(lines) >= 5, proc.stderr
    assert re.search(r"objects \(\d+%\), [\d,]+ objects/s, (ETA \d+:\d\d:\d\d, )?0 failed$", lines[0])
    assert lines[-1].startswith(f"import {col}: 300 objects (100%)")
    assert "\r" not in proc.stderr  # no bar redraws in a log


def test_collections_and_search_table(gateway, url, capsys):
    col = name()
    create(gateway, col, text_fields=["title"])
    with Client(gateway.http_url) as client:
        client.collection(col).insert_many([{"id": "t1", "properties": {"title": "table row one"}},
                                            {"id": "t2", "properties": {"title": "another row"}}],
                                           progress=False)
    code, out, _ = cli(url, "collections", "list", capsys=capsys)
    assert code == 0 and re.search(rf"^{col}\s+2\s+main: fake \(24\)\s+title$", out, re.M), out
    code, out, _ = cli(url, "collections", "get", col, capsys=capsys)
    assert code == 0 and json.loads(out)["name"] == col
    code, out, _ = cli(url, "search", col, "table one", "--limit", "1", capsys=capsys)
    assert code == 0 and out.splitlines()[0].split() == ["#", "id", "score", "title"]
    assert out.splitlines()[2].split()[:2] == ["1", "t1"] and "1 hits in" in out
    code, _, err = cli(url, "search", col, "x", "--kind", "hybrid", "--alpha", "2", capsys=capsys)
    assert code == 1 and "hybrid.alpha" in err
    code, out, _ = cli(url, "search", col, "table one", "--kind", "hybrid", "--weights",
                       '{"main": 1, "bm25": 1}', "--limit", "1", capsys=capsys)
    assert code == 0 and out.splitlines()[2].split()[:2] == ["1", "t1"], out
    code, _, err = cli(url, "search", col, "x", "--kind", "hybrid", "--weights", '{"main": 1}',
                       capsys=capsys)
    assert code == 1 and "hybrid.weights" in err
    code, _, err = cli(url, "search", col, "x", "--kind", "neural_sparse", "--sparse-vector", "splade",
                       capsys=capsys)
    assert code == 1 and "neural_sparse.vector" in err  # the collection has no sparse vectorizer
    code, _, err = cli(url, "collections", "delete", col, capsys=capsys)
    assert code == 2 and "--yes" in err
    code, out, _ = cli(url, "collections", "delete", col, "--yes", capsys=capsys)
    assert code == 0
    code, _, err = cli(url, "collections", "get", col, capsys=capsys)
    assert code == 1 and "not found" in err


def test_ctrl_c_stops_cleanly_and_reports_what_was_acknowledged(tmp_path):
    """A real SIGINT to `polyvec import` while requests are in flight (a slow model)."""
    from tests.gateway_thread import GatewayThread

    with GatewayThread(tmp_path, "edge", models={"fake": {"dims": 24, "forward_delay": 0.05}}) as gw:
        col = name()
        create(gw, col, text_fields=["title"])
        rows = [{"id": f"k{i}", "title": f"slow {i}"} for i in range(4000)]
        src = write_jsonl(tmp_path / "big.jsonl", rows)
        # Ctrl-C's usual handler in the child even where this test runs with SIGINT ignored (a background
        # job inherits that, and Python then installs no handler): the command must still stop cleanly
        interruptible = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                         "runpy.run_module('polyvec_client', run_name='__main__', alter_sys=True)")
        proc = subprocess.Popen([sys.executable, "-c", interruptible, "import", col, str(src), "--url",
                                 gw.http_url, "--batch-size", "25", "--concurrency", "2",
                                 "--progress-interval", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=child_env())
        try:
            assert proc.stderr is not None
            for line in proc.stderr:  # wait until some chunks were acknowledged
                if re.search(rf"import {col}: [1-9][\d,]* objects", line):
                    break
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, (out, err)
        assert "Traceback" not in err and "interrupted" in out and "--resume" in out
        acknowledged = int(re.search(r"imported ([\d,]+) objects", out).group(1).replace(",", ""))
        time.sleep(0.2)
        with Client(gw.http_url) as client:
            assert client.collection(col).count() == acknowledged < 4000
        # and --resume finishes the job
        code = main(["import", col, str(src), "--resume", "--url", gw.http_url, "--batch-size", "200"])
        assert code == 0
        with Client(gw.http_url) as client:
            assert client.collection(col).count() == 4000


def test_bad_sources(gateway, tmp_path, capsys):
    col = name()
    create(gateway, col, text_fields=["title"])
    code, _, err = cli(gateway, "import", col, str(tmp_path / "missing.jsonl"), capsys=capsys)
    assert code == 2 and "no such file" in err
    (tmp_path / "x.xml").write_text("<a/>")
    code, _, err = cli(gateway, "import", col, str(tmp_path / "x.xml"), capsys=capsys)
    assert code == 2 and "unknown format" in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli(gateway, "import", col, str(tmp_path / "empty"), capsys=capsys)
    assert code == 2 and "no images" in err
    src = write_jsonl(tmp_path / "ok.jsonl", [{"title": "x"}])
    code, _, err = cli(gateway, "import", "ghost-" + col, str(src), capsys=capsys)
    assert code == 2 and "does not exist" in err and "--create" in err
    code, _, err = cli(gateway, "import", "new-" + col, str(src), "--create", capsys=capsys)
    assert code == 2 and "--text-fields" in err
