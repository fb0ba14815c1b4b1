"""BM25 through Qdrant (sparse vectors from gateway.bm25 + the IDF modifier) agrees with rank-bm25.

rank-bm25's BM25Okapi is aligned with Qdrant's BM25 in the two places where they differ by design:
- IDF: Qdrant uses ln(1 + (N - n + 0.5) / (n + 0.5)) (never negative); BM25Okapi uses
  ln((N - n + 0.5) / (n + 0.5)) with an epsilon floor. The subclass below uses Qdrant's formula.
- avgdl: the store's document weights use the collection's ``avg_len`` setting; rank-bm25 gets the same
  value (first the true corpus mean, then a deliberately different fixed value).
The tokenizer is the same function on both sides, and queries pass their unique terms (the store's query
vector has weight 1 per unique term).
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from gateway.bm25 import Bm25Encoder, Bm25Settings, estimate_avg_len, term_index, tokenize
from gateway.storage.base import CollectionSchema, DenseVectorConfig, PointRecord, Store
from gateway.storage.edge_store import EdgeStore
from gateway.storage.qdrant_store import QdrantStore

N_DOCS = 320
BRANDS = ["Acme", "Nordlys", "Kōbō", "Zephyr", "Helios", "Vantaa", "Orca", "Lumen", "Brava", "Tundra"]
PRODUCTS = [
    "lamp", "chair", "desk", "sofa", "kettle", "blender", "jacket", "boots", "backpack", "tent", "speaker",
    "headphones", "monitor", "keyboard", "mouse", "router", "camera", "lens", "tripod", "mug", "teapot",
    "pan", "knife", "cutting-board", "towel", "pillow", "blanket", "rug", "mirror", "clock",
]
ADJECTIVES = [
    "compact", "wireless", "waterproof", "ergonomic", "vintage", "modern", "lightweight", "heavy-duty",
    "foldable", "adjustable", "rechargeable", "insulated", "organic", "handmade", "premium", "budget",
    "silent", "smart", "portable", "durable",
]
MATERIALS = ["oak", "walnut", "steel", "aluminium", "bamboo", "wool", "cotton", "leather", "ceramic", "glass"]
FILLER = (
    "with for and the a of in to on easy clean setup includes warranty year design colour black white grey "
    "blue green red size small medium large extra fits most home office kitchen outdoor travel camping "
    "garden kids adults gift set pack two three four USB-C battery hours power noise cancelling bluetooth "
    "wifi 6E 4K HDR zoom stainless non-stick dishwasher safe machine washable hypoallergenic"
).split()


def catalogue() -> list[str]:
    """Deterministic product descriptions of varied length (5 to ~60 tokens), Zipf-ish filler words."""
    rng = random.Random(20240611)
    weights = [1.0 / (r + 1) for r in range(len(FILLER))]
    docs = []
    for _ in range(N_DOCS):
        title = (
            f"{rng.choice(BRANDS)} {rng.choice(ADJECTIVES)} {rng.choice(MATERIALS)} {rng.choice(PRODUCTS)}"
        )
        extra = rng.choices(FILLER, weights=weights, k=rng.randint(1, 50))
        if rng.random() < 0.3:
            extra += [rng.choice(PRODUCTS)] * rng.randint(1, 3)  # repeated terms: tf > 1
        docs.append(f"{title}. {' '.join(extra)}")
    return docs


QUERIES = [
    "lamp",
    "wireless headphones",
    "oak desk",
    "waterproof jacket outdoor",
    "ceramic teapot gift",
    "Kōbō kettle",
    "steel knife dishwasher safe",
    "portable speaker bluetooth battery",
    "wool blanket",
    "USB-C",
    "4K monitor HDR",
    "camera lens tripod",
    "leather boots",
    "bamboo cutting-board",
    "smart router wifi 6E",
    "handmade mug",
    "adjustable ergonomic chair office",
    "the and with",
    "zeppelin lamp",
    "camping tent lightweight foldable",
]


class QdrantIdfBM25(BM25Okapi):
    """BM25Okapi with Qdrant's IDF: ln(1 + (N - n + 0.5) / (n + 0.5))."""

    def _calc_idf(self, nd: dict[str, int]) -> None:
        self.idf = {
            word: math.log(1.0 + (self.corpus_size - freq + 0.5) / (freq + 0.5)) for word, freq in nd.items()
        }


@pytest.fixture(params=["edge", "qdrant"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = EdgeStore(tmp_path / "edge") if request.param == "edge" else QdrantStore(location=":memory:")
    yield s
    s.close()


def pid(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def index_corpus(store: Store, docs: list[str], encoder: Bm25Encoder) -> None:
    store.create_collection(
        CollectionSchema("catalogue", dense={"v": DenseVectorConfig(2, "cosine")}, sparse=["bm25"])
    )
    store.upsert(
        "catalogue",
        [
            PointRecord(pid(i), {"text": d}, {"v": [1.0, float(i)]}, {"bm25": encoder.document(d)})
            for i, d in enumerate(docs)
        ],
    )


def test_tokenizer_and_hashing() -> None:
    assert tokenize("Wi-Fi 6E, USB-C & Größe: 東京 café_bar") == [
        "wi", "fi", "6e", "usb", "c", "grösse", "東京", "café", "bar",
    ]
    assert tokenize("The cat", stopwords=frozenset({"the"})) == ["cat"]
    assert term_index("lamp") == term_index("lamp") and 0 <= term_index("lamp") < 2**31
    # no collisions in this corpus's vocabulary
    vocab = {t for d in catalogue() for t in tokenize(d)}
    assert len({term_index(t) for t in vocab}) == len(vocab)


def test_document_weights_follow_formula() -> None:
    enc = Bm25Encoder(Bm25Settings(k1=1.5, b=0.6, avg_len=5.0))
    vec = enc.document("red red red shoe")
    weights = dict(zip(vec.indices, vec.values, strict=True))
    norm = 1.5 * (1 - 0.6 + 0.6 * 4 / 5.0)
    assert weights[term_index("red")] == pytest.approx(3 * 2.5 / (3 + norm))
    assert weights[term_index("shoe")] == pytest.approx(1 * 2.5 / (1 + norm))
    q = enc.query("shoe red shoe")
    assert sorted(q.indices) == sorted([term_index("red"), term_index("shoe")]) and q.values == [1.0, 1.0]
    with pytest.raises(ValueError, match="bm25.b"):
        Bm25Settings(b=1.5)
    with pytest.raises(ValueError, match="bm25.avg_len"):
        Bm25Settings(avg_len=0)


@pytest.mark.parametrize("avg_len_mode", ["corpus_mean", "fixed_256"])
def test_store_bm25_matches_rank_bm25(store: Store, avg_len_mode: str) -> None:
    docs = catalogue()
    tokenized = [tokenize(d) for d in docs]
    avg_len = estimate_avg_len(docs) if avg_len_mode == "corpus_mean" else 256.0
    assert avg_len_mode != "corpus_mean" or avg_len == pytest.approx(
        sum(map(len, tokenized)) / len(tokenized)
    )
    encoder = Bm25Encoder(Bm25Settings(fields=["text"], k1=1.2, b=0.75, avg_len=avg_len))
    index_corpus(store, docs, encoder)

    reference = QdrantIdfBM25(tokenized, k1=1.2, b=0.75)
    reference.avgdl = avg_len  # the same avgdl on both sides

    compared = 0
    for query in QUERIES:
        terms = sorted(set(tokenize(query)))
        expected = np.asarray(reference.get_scores(terms))
        order = sorted(range(len(docs)), key=lambda i: (-expected[i], i))
        matching = [i for i in order if expected[i] > 0]
        hits = store.search_sparse("catalogue", "bm25", encoder.query(query), limit=10, with_payload=False)
        assert len(hits) == min(10, len(matching)), query
        got_ids = [int(uuid.UUID(h.id).int) - 1 for h in hits]
        # every score equals rank-bm25's score for that document
        for h, i in zip(hits, got_ids, strict=True):
            assert h.score == pytest.approx(expected[i], rel=1e-4), (query, i)
        # and the top-10 ranking is the same (ties, if any, may come in any order)
        top = [expected[i] for i in matching[:10]]
        assert [h.score for h in hits] == pytest.approx(top, rel=1e-4), query
        tie_free = [
            i for i in matching[:10] if all(abs(expected[i] - expected[j]) > 1e-4 for j in matching if j != i)
        ]
        for rank, i in enumerate(matching[:10]):
            if i in tie_free:
                assert got_ids[rank] == i, (query, rank)
                compared += 1
    assert compared > 100  # the rankings really were compared position by position
