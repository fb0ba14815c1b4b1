"""BM25 through Qdrant (sparse vectors from gateway.bm25 + the IDF modifier) agrees with rank-bm25.

Both analyzers are checked: Qdrant's (``qdrant_edge.Bm25``: English stemming and stopwords by default) and
the legacy tokenizer of older collections. rank-bm25 gets the SAME analysis as its input: each document
becomes its analysed terms (term index repeated tf times, from ``Bm25Encoder.term_counts``), each query
its unique analysed terms. rank-bm25's BM25Okapi is aligned with Qdrant's BM25 where they differ by design:
- IDF: Qdrant uses ln(1 + (N - n + 0.5) / (n + 0.5)) (never negative); BM25Okapi uses
  ln((N - n + 0.5) / (n + 0.5)) with an epsilon floor. The subclass below uses Qdrant's formula.
- avgdl: the store's document weights use the collection's ``avg_len`` setting; rank-bm25 gets the same
  value (first the true corpus mean, then a deliberately different fixed value).
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

from gateway.bm25 import (
    Bm25Encoder,
    Bm25Settings,
    Bm25SettingsError,
    Stopwords,
    legacy_term_index,
    legacy_tokenize,
    make_encoder,
    mean_length,
)
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


def analysed(encoder: Bm25Encoder, text: str) -> list[int]:
    """The document as rank-bm25 input: each analysed term (its index) repeated tf times."""
    return [idx for idx, tf in sorted(encoder.term_counts(text).items()) for _ in range(tf)]


def test_legacy_tokenizer_and_hashing() -> None:
    assert legacy_tokenize("Wi-Fi 6E, USB-C & Größe: 東京 café_bar") == [
        "wi", "fi", "6e", "usb", "c", "grösse", "東京", "café", "bar",
    ]
    assert legacy_tokenize("The cat", stopwords=frozenset({"the"})) == ["cat"]
    assert legacy_term_index("lamp") == legacy_term_index("lamp") and 0 <= legacy_term_index("lamp") < 2**31
    vocab = {t for d in catalogue() for t in legacy_tokenize(d)}
    assert len({legacy_term_index(t) for t in vocab}) == len(vocab)  # no collisions in this vocabulary


def test_qdrant_analyzer_stems_and_drops_stopwords() -> None:
    enc = make_encoder(Bm25Settings(fields=["t"]))
    assert len(enc.query("sneakers for jogging").indices) == 2  # "for" is an English stopword
    assert enc.query("the and with").indices == []
    assert enc.query("running").indices == enc.query("runs").indices == enc.query("RUN").indices
    assert enc.term_counts("Running shoes, runs and more red shoes") == {
        enc.query("run").indices[0]: 2, enc.query("shoe").indices[0]: 2, enc.query("red").indices[0]: 1,
    }
    plain = make_encoder(Bm25Settings(fields=["t"], stemmer=False, stopwords=Stopwords()))
    assert len(plain.query("sneakers for jogging").indices) == 3
    assert plain.query("running").indices != plain.query("runs").indices
    german = make_encoder(Bm25Settings(fields=["t"], language="german", ascii_folding=True))
    assert german.query("Größe café").indices == german.query("grosse cafe").indices
    assert len(german.query("der Hund und die Katze").indices) == 2  # German stopwords
    custom = make_encoder(Bm25Settings(fields=["t"], stopwords=Stopwords(languages=("english",),
                                                                         words=("cheap",))))
    assert len(custom.query("cheap shoes for you").indices) == 1
    # the legacy analyzer keeps every word, unstemmed
    legacy = make_encoder(Bm25Settings(fields=["t"], analyzer="legacy"))
    assert len(legacy.query("sneakers for jogging").indices) == 3
    with pytest.raises(Bm25SettingsError, match="bm25.language"):
        Bm25Settings(language="klingon")
    with pytest.raises(Bm25SettingsError, match="bm25.stemmer"):
        Bm25Settings(stemmer="klingon")


@pytest.mark.parametrize("analyzer", ["qdrant", "legacy"])
def test_document_weights_follow_formula(analyzer: str) -> None:
    enc = make_encoder(Bm25Settings(analyzer=analyzer, k1=1.5, b=0.6, avg_len=5.0))
    red, shoe = enc.query("red").indices[0], enc.query("shoe").indices[0]
    vec = enc.document("red red red shoe")
    weights = dict(zip(vec.indices, vec.values, strict=True))
    norm = 1.5 * (1 - 0.6 + 0.6 * 4 / 5.0)
    assert weights[red] == pytest.approx(3 * 2.5 / (3 + norm), rel=1e-6)
    assert weights[shoe] == pytest.approx(1 * 2.5 / (1 + norm), rel=1e-6)
    q = enc.query("shoe red shoe")
    assert sorted(q.indices) == sorted([red, shoe]) and q.values == [1.0, 1.0]
    with pytest.raises(ValueError, match="bm25.b"):
        Bm25Settings(b=1.5)
    with pytest.raises(ValueError, match="bm25.avg_len"):
        Bm25Settings(avg_len=0)


@pytest.mark.parametrize("analyzer", ["qdrant", "legacy"])
def test_term_counts_are_the_analyzer_of_the_vectors(analyzer: str) -> None:
    """The lengths and counts given to rank-bm25 are those the document vectors were computed from."""
    enc = make_encoder(Bm25Settings(analyzer=analyzer, k1=1.2, b=0.75, avg_len=17.0))
    for doc in catalogue()[:80]:
        counts = enc.term_counts(doc)
        dl = sum(counts.values())
        assert dl == enc.length(doc) > 0
        norm = 1.2 * (0.25 + 0.75 * dl / 17.0)
        vec = enc.document(doc)
        assert vec.indices == sorted(counts)
        assert vec.values == pytest.approx([counts[i] * 2.2 / (counts[i] + norm) for i in vec.indices],
                                           rel=1e-5)


@pytest.mark.parametrize("analyzer", ["qdrant", "legacy"])
@pytest.mark.parametrize("avg_len_mode", ["corpus_mean", "fixed_256"])
def test_store_bm25_matches_rank_bm25(store: Store, analyzer: str, avg_len_mode: str) -> None:
    docs = catalogue()
    probe = make_encoder(Bm25Settings(analyzer=analyzer))
    tokenized = [analysed(probe, d) for d in docs]
    avg_len = mean_length(probe, docs) if avg_len_mode == "corpus_mean" else 256.0
    assert avg_len_mode != "corpus_mean" or avg_len == pytest.approx(
        sum(map(len, tokenized)) / len(tokenized)
    )
    encoder = make_encoder(Bm25Settings(fields=["text"], analyzer=analyzer, k1=1.2, b=0.75, avg_len=avg_len))
    index_corpus(store, docs, encoder)

    reference = QdrantIdfBM25(tokenized, k1=1.2, b=0.75)
    reference.avgdl = avg_len  # the same avgdl on both sides

    compared = 0
    for query in QUERIES:
        terms = encoder.query(query).indices  # unique analysed terms
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
