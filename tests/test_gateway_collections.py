"""gateway/service/collections.py without a gateway: a stored collection's record (what the stores keep),
its public view (what GET shows) and its schema (what the store is told to create).

The gateway tests read these only through whole requests; a mutation run over collections.py
(docs/mutation-report.md) left the keys of the record, the filled-in view and the schema options unpinned.
"""

from __future__ import annotations

from gateway.definitions import BM25_VECTOR, parse_definition
from gateway.service.collections import SparseInfo, StoredCollection, VectorInfo
from gateway.storage.base import CollectionSchema, DenseVectorConfig

DEFINITION = {
    "name": "docs",
    # declared out of alphabetical order: the first declared is the default, and the order must survive
    "vectorizers": {
        "zeta": {"model": "clip", "text_fields": ["title"], "image_fields": ["photo"], "distance": "dot"},
        "alpha": {"dimensions": 3},
    },
    "sparse_vectorizers": {
        "words": {"model": "splade", "text_fields": ["title"], "query_model": "splade-q"},
        "bag": {"model": "bag", "text_fields": ["body"]},
    },
    "bm25": {"fields": ["title"]},
    "distance": "euclid",
    "shard_number": 3,
    "replication_factor": 2,
    "hnsw_m": 24,
    "hnsw_ef_construct": 200,
    "fields": {"price": "float"},
}


def stored() -> StoredCollection:
    return StoredCollection(
        definition=parse_definition(DEFINITION),
        vectors={"zeta": VectorInfo(dimensions=4, modalities=["text", "image"], model_name="clip-b32"),
                 "alpha": VectorInfo(dimensions=3)},
        created_at=1234.5,
        sparse={"words": SparseInfo(vocab_size=30522, model_name="splade-v3", function_name="SPARSE_ENCODING",
                                    query_model_name="splade-q-v3", query_function_name="SPARSE_TOKENIZE"),
                "bag": SparseInfo(vocab_size=100)},
        index_errors={"price": "disk full"},
    )


def test_the_record_holds_everything_and_keeps_the_declared_order():
    s = stored()
    record = s.to_record()
    assert set(record) == {"name", "definition", "vectors", "sparse_vectors", "created_at", "index_errors",
                           "order"}
    assert record["name"] == "docs"
    assert record["definition"] == s.definition.model_dump(mode="json")
    assert record["vectors"] == {
        "zeta": {"dimensions": 4, "modalities": ["text", "image"], "model_name": "clip-b32"},
        "alpha": {"dimensions": 3, "modalities": [], "model_name": None}}
    assert record["sparse_vectors"] == {
        "words": {"vocab_size": 30522, "model_name": "splade-v3", "function_name": "SPARSE_ENCODING",
                  "query_model_name": "splade-q-v3", "query_function_name": "SPARSE_TOKENIZE"},
        "bag": {"vocab_size": 100, "model_name": None, "function_name": None, "query_model_name": None,
                "query_function_name": None}}
    assert record["created_at"] == 1234.5
    assert record["index_errors"] == {"price": "disk full"}
    assert record["index_errors"] is not s.index_errors  # a copy: a later change is not written through
    assert record["order"] == {"vectorizers": ["zeta", "alpha"], "sparse_vectorizers": ["words", "bag"]}


def test_a_record_read_back_is_the_same_collection_also_from_sorted_json():
    s = stored()
    record = s.to_record()
    # the stores keep JSON with sorted keys
    for key in ("vectorizers", "sparse_vectorizers"):
        record["definition"][key] = dict(sorted(record["definition"][key].items()))
    back = StoredCollection.from_record(record)
    assert back.definition == s.definition
    assert list(back.definition.vectorizers) == ["zeta", "alpha"]
    assert back.definition.default_vector() == "zeta"
    assert back.definition.default_sparse_vector() == "words"
    assert back.vectors == s.vectors and back.sparse == s.sparse
    assert back.created_at == 1234.5 and back.index_errors == {"price": "disk full"}
    assert back.to_record() == s.to_record()


def test_the_public_view_fills_in_what_the_models_turned_out_to_be():
    out = stored().public()
    assert out["name"] == "docs" and out["created_at"] == 1234.5
    assert out["vectorizers"]["zeta"] == {
        "model": "clip", "text_fields": ["title"], "image_fields": ["photo"], "weights": {},
        "distance": "dot",
        "dimensions": 4, "modalities": ["text", "image"], "model_name": "clip-b32"}
    # a vector without a model: its dimensions, no modalities to speak of, no model name
    assert out["vectorizers"]["alpha"] == {"text_fields": [], "image_fields": [], "weights": {},
                                           "dimensions": 3, "modalities": []}
    assert out["sparse_vectorizers"]["words"] == {
        "model": "splade", "text_fields": ["title"], "query_model": "splade-q", "vocab_size": 30522,
        "model_name": "splade-v3", "function_name": "SPARSE_ENCODING", "query_model_name": "splade-q-v3",
        "query_function_name": "SPARSE_TOKENIZE"}
    # what was not learned is left out, not shown as null
    assert out["sparse_vectorizers"]["bag"] == {"model": "bag", "text_fields": ["body"], "vocab_size": 100}
    assert out["distance"] == "euclid" and out["shard_number"] == 3
    assert "index_errors" not in out


def test_the_public_view_of_a_vector_nothing_was_learned_about_is_the_definition():
    s = stored()
    s.vectors.pop("alpha")
    s.sparse.pop("bag")
    out = s.public()
    assert out["vectorizers"]["alpha"] == {"text_fields": [], "image_fields": [], "weights": {},
                                           "dimensions": 3}
    assert out["sparse_vectorizers"]["bag"] == {"model": "bag", "text_fields": ["body"]}


def test_the_schema_tells_the_store_every_vector_and_option():
    assert stored().schema() == CollectionSchema(
        name="docs",
        dense={"zeta": DenseVectorConfig(size=4, distance="dot"),
               "alpha": DenseVectorConfig(size=3, distance="euclid")},
        sparse=[BM25_VECTOR],
        sparse_plain=["words", "bag"],
        shard_number=3, replication_factor=2, hnsw_m=24, hnsw_ef_construct=200)


def test_the_schema_of_a_collection_without_bm25_or_options():
    s = StoredCollection(
        definition=parse_definition({"name": "plain", "vectorizers": {"v": {"dimensions": 2}},
                                     "bm25": {"fields": []}}),
        vectors={"v": VectorInfo(dimensions=2)})
    assert s.schema() == CollectionSchema(name="plain",
                                          dense={"v": DenseVectorConfig(size=2, distance="cosine")})
    assert s.bm25_encoder is None and s.field_types == {}


def test_a_record_from_before_analyzers_reads_as_the_legacy_analyzer():
    record = stored().to_record()
    # written before analyzers existed: no analyzer, no language
    record["definition"]["bm25"] = {"fields": ["title"], "k1": 1.2, "b": 0.75, "avg_len": None}
    back = StoredCollection.from_record(record)
    assert back.definition.bm25 is not None
    assert back.definition.bm25.analyzer == "legacy" and back.definition.bm25.fields == ["title"]
    assert back.definition.bm25.language is None  # the legacy analyzer has no language
    # one that names its analyzer keeps it
    assert StoredCollection.from_record(stored().to_record()).definition.bm25.analyzer == "qdrant"


def test_an_order_that_does_not_match_the_definition_is_ignored():
    record = stored().to_record()
    record["order"] = {"vectorizers": ["zeta"], "sparse_vectorizers": ["bag", "words", "ghost"]}
    record["definition"]["vectorizers"] = dict(sorted(record["definition"]["vectorizers"].items()))
    back = StoredCollection.from_record(record)
    # no vectorizer lost, none invented: the stored (sorted) order stands
    assert list(back.definition.vectorizers) == ["alpha", "zeta"]
    assert list(back.definition.sparse_vectorizers) == ["words", "bag"]
    # a record without an order (written before it was kept) reads as stored
    record.pop("order")
    assert list(StoredCollection.from_record(record).definition.vectorizers) == ["alpha", "zeta"]
