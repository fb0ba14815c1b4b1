from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Vectorizer(_message.Message):
    __slots__ = ("model", "inference_url", "text_fields", "image_fields", "weights", "dimensions", "distance", "modalities", "model_name")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_URL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELDS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELDS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    model: str
    inference_url: str
    text_fields: _containers.RepeatedScalarFieldContainer[str]
    image_fields: _containers.RepeatedScalarFieldContainer[str]
    weights: _containers.ScalarMap[str, float]
    dimensions: int
    distance: str
    modalities: _containers.RepeatedScalarFieldContainer[str]
    model_name: str
    def __init__(self, model: _Optional[str] = ..., inference_url: _Optional[str] = ..., text_fields: _Optional[_Iterable[str]] = ..., image_fields: _Optional[_Iterable[str]] = ..., weights: _Optional[_Mapping[str, float]] = ..., dimensions: _Optional[int] = ..., distance: _Optional[str] = ..., modalities: _Optional[_Iterable[str]] = ..., model_name: _Optional[str] = ...) -> None: ...

class SparseVectorizer(_message.Message):
    __slots__ = ("model", "inference_url", "text_fields", "query_model", "query_inference_url", "vocab_size", "model_name", "function_name", "query_model_name", "query_function_name")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_URL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_MODEL_FIELD_NUMBER: _ClassVar[int]
    QUERY_INFERENCE_URL_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    QUERY_MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    QUERY_FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    model: str
    inference_url: str
    text_fields: _containers.RepeatedScalarFieldContainer[str]
    query_model: str
    query_inference_url: str
    vocab_size: int
    model_name: str
    function_name: str
    query_model_name: str
    query_function_name: str
    def __init__(self, model: _Optional[str] = ..., inference_url: _Optional[str] = ..., text_fields: _Optional[_Iterable[str]] = ..., query_model: _Optional[str] = ..., query_inference_url: _Optional[str] = ..., vocab_size: _Optional[int] = ..., model_name: _Optional[str] = ..., function_name: _Optional[str] = ..., query_model_name: _Optional[str] = ..., query_function_name: _Optional[str] = ...) -> None: ...

class Bm25(_message.Message):
    __slots__ = ("fields", "k1", "b", "avg_len", "analyzer", "language", "tokenizer", "stemmer", "stopwords", "ascii_folding", "off")
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    K1_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    AVG_LEN_FIELD_NUMBER: _ClassVar[int]
    ANALYZER_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FIELD_NUMBER: _ClassVar[int]
    STEMMER_FIELD_NUMBER: _ClassVar[int]
    STOPWORDS_FIELD_NUMBER: _ClassVar[int]
    ASCII_FOLDING_FIELD_NUMBER: _ClassVar[int]
    OFF_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.RepeatedScalarFieldContainer[str]
    k1: float
    b: float
    avg_len: float
    analyzer: str
    language: str
    tokenizer: str
    stemmer: _struct_pb2.Value
    stopwords: _struct_pb2.Value
    ascii_folding: bool
    off: bool
    def __init__(self, fields: _Optional[_Iterable[str]] = ..., k1: _Optional[float] = ..., b: _Optional[float] = ..., avg_len: _Optional[float] = ..., analyzer: _Optional[str] = ..., language: _Optional[str] = ..., tokenizer: _Optional[str] = ..., stemmer: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., stopwords: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., ascii_folding: _Optional[bool] = ..., off: _Optional[bool] = ...) -> None: ...

class FieldDeclaration(_message.Message):
    __slots__ = ("type", "language")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    type: str
    language: str
    def __init__(self, type: _Optional[str] = ..., language: _Optional[str] = ...) -> None: ...

class CollectionDefinition(_message.Message):
    __slots__ = ("name", "vectorizers", "bm25", "distance", "shard_number", "replication_factor", "hnsw_m", "hnsw_ef_construct", "fields", "sparse_vectorizers")
    class VectorizersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Vectorizer
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Vectorizer, _Mapping]] = ...) -> None: ...
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FieldDeclaration
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FieldDeclaration, _Mapping]] = ...) -> None: ...
    class SparseVectorizersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SparseVectorizer
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SparseVectorizer, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VECTORIZERS_FIELD_NUMBER: _ClassVar[int]
    BM25_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SHARD_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    HNSW_M_FIELD_NUMBER: _ClassVar[int]
    HNSW_EF_CONSTRUCT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    SPARSE_VECTORIZERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    vectorizers: _containers.MessageMap[str, Vectorizer]
    bm25: Bm25
    distance: str
    shard_number: int
    replication_factor: int
    hnsw_m: int
    hnsw_ef_construct: int
    fields: _containers.MessageMap[str, FieldDeclaration]
    sparse_vectorizers: _containers.MessageMap[str, SparseVectorizer]
    def __init__(self, name: _Optional[str] = ..., vectorizers: _Optional[_Mapping[str, Vectorizer]] = ..., bm25: _Optional[_Union[Bm25, _Mapping]] = ..., distance: _Optional[str] = ..., shard_number: _Optional[int] = ..., replication_factor: _Optional[int] = ..., hnsw_m: _Optional[int] = ..., hnsw_ef_construct: _Optional[int] = ..., fields: _Optional[_Mapping[str, FieldDeclaration]] = ..., sparse_vectorizers: _Optional[_Mapping[str, SparseVectorizer]] = ...) -> None: ...

class IndexState(_message.Message):
    __slots__ = ("type", "state", "points", "error")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    type: str
    state: str
    points: int
    error: str
    def __init__(self, type: _Optional[str] = ..., state: _Optional[str] = ..., points: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class Collection(_message.Message):
    __slots__ = ("definition", "count", "created_at", "indexes")
    class IndexesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: IndexState
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[IndexState, _Mapping]] = ...) -> None: ...
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    definition: CollectionDefinition
    count: int
    created_at: float
    indexes: _containers.MessageMap[str, IndexState]
    def __init__(self, definition: _Optional[_Union[CollectionDefinition, _Mapping]] = ..., count: _Optional[int] = ..., created_at: _Optional[float] = ..., indexes: _Optional[_Mapping[str, IndexState]] = ...) -> None: ...

class UpdateCollectionRequest(_message.Message):
    __slots__ = ("name", "fields")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FieldDeclaration
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FieldDeclaration, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    fields: _containers.MessageMap[str, FieldDeclaration]
    def __init__(self, name: _Optional[str] = ..., fields: _Optional[_Mapping[str, FieldDeclaration]] = ...) -> None: ...

class ReindexBm25Request(_message.Message):
    __slots__ = ("collection", "avg_len", "bm25")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    AVG_LEN_FIELD_NUMBER: _ClassVar[int]
    BM25_FIELD_NUMBER: _ClassVar[int]
    collection: str
    avg_len: float
    bm25: Bm25
    def __init__(self, collection: _Optional[str] = ..., avg_len: _Optional[float] = ..., bm25: _Optional[_Union[Bm25, _Mapping]] = ...) -> None: ...

class ReindexBm25Response(_message.Message):
    __slots__ = ("collection", "objects", "avg_len", "bm25", "took_ms")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    AVG_LEN_FIELD_NUMBER: _ClassVar[int]
    BM25_FIELD_NUMBER: _ClassVar[int]
    TOOK_MS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    objects: int
    avg_len: float
    bm25: Bm25
    took_ms: float
    def __init__(self, collection: _Optional[str] = ..., objects: _Optional[int] = ..., avg_len: _Optional[float] = ..., bm25: _Optional[_Union[Bm25, _Mapping]] = ..., took_ms: _Optional[float] = ...) -> None: ...

class GetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[Collection]
    def __init__(self, collections: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ("name", "deleted")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    name: str
    deleted: bool
    def __init__(self, name: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...

class FloatList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class ObjectIn(_message.Message):
    __slots__ = ("id", "properties", "vectors")
    class VectorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FloatList
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FloatList, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    id: str
    properties: _struct_pb2.Struct
    vectors: _containers.MessageMap[str, FloatList]
    def __init__(self, id: _Optional[str] = ..., properties: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., vectors: _Optional[_Mapping[str, FloatList]] = ...) -> None: ...

class ImportObjectsRequest(_message.Message):
    __slots__ = ("collection", "objects")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    objects: _containers.RepeatedCompositeFieldContainer[ObjectIn]
    def __init__(self, collection: _Optional[str] = ..., objects: _Optional[_Iterable[_Union[ObjectIn, _Mapping]]] = ...) -> None: ...

class ObjectResult(_message.Message):
    __slots__ = ("index", "id", "uuid", "status", "error", "field", "message")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: str
    uuid: str
    status: str
    error: str
    field: str
    message: str
    def __init__(self, index: _Optional[int] = ..., id: _Optional[str] = ..., uuid: _Optional[str] = ..., status: _Optional[str] = ..., error: _Optional[str] = ..., field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ImportObjectsResponse(_message.Message):
    __slots__ = ("results", "ok", "errors", "replaced")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ObjectResult]
    ok: int
    errors: int
    replaced: int
    def __init__(self, results: _Optional[_Iterable[_Union[ObjectResult, _Mapping]]] = ..., ok: _Optional[int] = ..., errors: _Optional[int] = ..., replaced: _Optional[int] = ...) -> None: ...

class GetObjectRequest(_message.Message):
    __slots__ = ("collection", "id", "with_vectors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    id: str
    with_vectors: bool
    def __init__(self, collection: _Optional[str] = ..., id: _Optional[str] = ..., with_vectors: _Optional[bool] = ...) -> None: ...

class SparseVector(_message.Message):
    __slots__ = ("indices", "values")
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    indices: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, indices: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class Object(_message.Message):
    __slots__ = ("id", "uuid", "properties", "vectors", "sparse_vectors")
    class VectorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FloatList
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FloatList, _Mapping]] = ...) -> None: ...
    class SparseVectorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SparseVector
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SparseVector, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    SPARSE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    id: str
    uuid: str
    properties: _struct_pb2.Struct
    vectors: _containers.MessageMap[str, FloatList]
    sparse_vectors: _containers.MessageMap[str, SparseVector]
    def __init__(self, id: _Optional[str] = ..., uuid: _Optional[str] = ..., properties: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., vectors: _Optional[_Mapping[str, FloatList]] = ..., sparse_vectors: _Optional[_Mapping[str, SparseVector]] = ...) -> None: ...

class PutObjectRequest(_message.Message):
    __slots__ = ("collection", "id", "properties", "vectors")
    class VectorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FloatList
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FloatList, _Mapping]] = ...) -> None: ...
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    id: str
    properties: _struct_pb2.Struct
    vectors: _containers.MessageMap[str, FloatList]
    def __init__(self, collection: _Optional[str] = ..., id: _Optional[str] = ..., properties: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., vectors: _Optional[_Mapping[str, FloatList]] = ...) -> None: ...

class PutObjectResponse(_message.Message):
    __slots__ = ("id", "uuid", "status", "created", "vectorized")
    ID_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    VECTORIZED_FIELD_NUMBER: _ClassVar[int]
    id: str
    uuid: str
    status: str
    created: bool
    vectorized: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., uuid: _Optional[str] = ..., status: _Optional[str] = ..., created: _Optional[bool] = ..., vectorized: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteObjectRequest(_message.Message):
    __slots__ = ("collection", "id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    id: str
    def __init__(self, collection: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class DeleteObjectResponse(_message.Message):
    __slots__ = ("id", "deleted")
    ID_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    id: str
    deleted: bool
    def __init__(self, id: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...

class NearText(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: str
    def __init__(self, query: _Optional[str] = ...) -> None: ...

class NearImage(_message.Message):
    __slots__ = ("image", "url")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    url: str
    def __init__(self, image: _Optional[bytes] = ..., url: _Optional[str] = ...) -> None: ...

class NearVector(_message.Message):
    __slots__ = ("vector",)
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, vector: _Optional[_Iterable[float]] = ...) -> None: ...

class Bm25Query(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: str
    def __init__(self, query: _Optional[str] = ...) -> None: ...

class NeuralSparseQuery(_message.Message):
    __slots__ = ("query", "vector")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    query: str
    vector: str
    def __init__(self, query: _Optional[str] = ..., vector: _Optional[str] = ...) -> None: ...

class HybridQuery(_message.Message):
    __slots__ = ("query", "alpha", "fusion", "weights")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    QUERY_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    query: str
    alpha: float
    fusion: str
    weights: _containers.ScalarMap[str, float]
    def __init__(self, query: _Optional[str] = ..., alpha: _Optional[float] = ..., fusion: _Optional[str] = ..., weights: _Optional[_Mapping[str, float]] = ...) -> None: ...

class OrderBy(_message.Message):
    __slots__ = ("field", "direction")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    field: str
    direction: str
    def __init__(self, field: _Optional[str] = ..., direction: _Optional[str] = ...) -> None: ...

class Mmr(_message.Message):
    __slots__ = ("candidates",)
    LAMBDA_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    candidates: int
    def __init__(self, candidates: _Optional[int] = ..., **kwargs) -> None: ...

class Diversity(_message.Message):
    __slots__ = ("mmr",)
    MMR_FIELD_NUMBER: _ClassVar[int]
    mmr: Mmr
    def __init__(self, mmr: _Optional[_Union[Mmr, _Mapping]] = ...) -> None: ...

class PropertyList(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "near_text", "near_image", "near_vector", "bm25", "hybrid", "neural_sparse", "vector", "filter", "limit", "offset", "properties", "order_by", "diversity")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    NEAR_TEXT_FIELD_NUMBER: _ClassVar[int]
    NEAR_IMAGE_FIELD_NUMBER: _ClassVar[int]
    NEAR_VECTOR_FIELD_NUMBER: _ClassVar[int]
    BM25_FIELD_NUMBER: _ClassVar[int]
    HYBRID_FIELD_NUMBER: _ClassVar[int]
    NEURAL_SPARSE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    collection: str
    near_text: NearText
    near_image: NearImage
    near_vector: NearVector
    bm25: Bm25Query
    hybrid: HybridQuery
    neural_sparse: NeuralSparseQuery
    vector: str
    filter: _struct_pb2.Struct
    limit: int
    offset: int
    properties: PropertyList
    order_by: OrderBy
    diversity: Diversity
    def __init__(self, collection: _Optional[str] = ..., near_text: _Optional[_Union[NearText, _Mapping]] = ..., near_image: _Optional[_Union[NearImage, _Mapping]] = ..., near_vector: _Optional[_Union[NearVector, _Mapping]] = ..., bm25: _Optional[_Union[Bm25Query, _Mapping]] = ..., hybrid: _Optional[_Union[HybridQuery, _Mapping]] = ..., neural_sparse: _Optional[_Union[NeuralSparseQuery, _Mapping]] = ..., vector: _Optional[str] = ..., filter: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ..., properties: _Optional[_Union[PropertyList, _Mapping]] = ..., order_by: _Optional[_Union[OrderBy, _Mapping]] = ..., diversity: _Optional[_Union[Diversity, _Mapping]] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "score", "properties")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    properties: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., properties: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "took_ms")
    HITS_FIELD_NUMBER: _ClassVar[int]
    TOOK_MS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    took_ms: float
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., took_ms: _Optional[float] = ...) -> None: ...

class FacetsRequest(_message.Message):
    __slots__ = ("collection", "field", "filter", "limit", "exact")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    field: str
    filter: _struct_pb2.Struct
    limit: int
    exact: bool
    def __init__(self, collection: _Optional[str] = ..., field: _Optional[str] = ..., filter: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., limit: _Optional[int] = ..., exact: _Optional[bool] = ...) -> None: ...

class FacetValue(_message.Message):
    __slots__ = ("value", "count")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    value: _struct_pb2.Value
    count: int
    def __init__(self, value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., count: _Optional[int] = ...) -> None: ...

class FacetsResponse(_message.Message):
    __slots__ = ("values", "took_ms")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TOOK_MS_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[FacetValue]
    took_ms: float
    def __init__(self, values: _Optional[_Iterable[_Union[FacetValue, _Mapping]]] = ..., took_ms: _Optional[float] = ...) -> None: ...

class ScrollObjectsRequest(_message.Message):
    __slots__ = ("collection", "filter", "limit", "cursor", "properties", "with_vectors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    filter: _struct_pb2.Struct
    limit: int
    cursor: str
    properties: PropertyList
    with_vectors: bool
    def __init__(self, collection: _Optional[str] = ..., filter: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., properties: _Optional[_Union[PropertyList, _Mapping]] = ..., with_vectors: _Optional[bool] = ...) -> None: ...

class ScrollObjectsResponse(_message.Message):
    __slots__ = ("objects", "next_cursor")
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    objects: _containers.RepeatedCompositeFieldContainer[Object]
    next_cursor: str
    def __init__(self, objects: _Optional[_Iterable[_Union[Object, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class CountObjectsRequest(_message.Message):
    __slots__ = ("collection", "filter", "exact")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    filter: _struct_pb2.Struct
    exact: bool
    def __init__(self, collection: _Optional[str] = ..., filter: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., exact: _Optional[bool] = ...) -> None: ...

class CountObjectsResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class DeleteObjectsRequest(_message.Message):
    __slots__ = ("collection", "filter", "ids", "all")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    filter: _struct_pb2.Struct
    ids: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    def __init__(self, collection: _Optional[str] = ..., filter: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., ids: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ...) -> None: ...

class DeleteObjectsResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class SearchBatchRequest(_message.Message):
    __slots__ = ("collection", "searches")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    collection: str
    searches: _containers.RepeatedCompositeFieldContainer[SearchRequest]
    def __init__(self, collection: _Optional[str] = ..., searches: _Optional[_Iterable[_Union[SearchRequest, _Mapping]]] = ...) -> None: ...

class SearchError(_message.Message):
    __slots__ = ("message", "field")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    message: str
    field: str
    def __init__(self, message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: SearchResponse
    error: SearchError
    def __init__(self, response: _Optional[_Union[SearchResponse, _Mapping]] = ..., error: _Optional[_Union[SearchError, _Mapping]] = ...) -> None: ...

class SearchBatchResponse(_message.Message):
    __slots__ = ("results", "took_ms")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TOOK_MS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    took_ms: float
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., took_ms: _Optional[float] = ...) -> None: ...

class GetLimitsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("import_batch_size", "max_page_size", "search_batch_size", "max_request_bytes")
    IMPORT_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    import_batch_size: int
    max_page_size: int
    search_batch_size: int
    max_request_bytes: int
    def __init__(self, import_batch_size: _Optional[int] = ..., max_page_size: _Optional[int] = ..., search_batch_size: _Optional[int] = ..., max_request_bytes: _Optional[int] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("collection", "queries", "qrels", "kinds", "alphas", "fusion", "k", "vector", "filter")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    QRELS_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    ALPHAS_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: str
    qrels: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    alphas: _containers.RepeatedScalarFieldContainer[float]
    fusion: _containers.RepeatedScalarFieldContainer[str]
    k: _containers.RepeatedScalarFieldContainer[int]
    vector: str
    filter: _struct_pb2.Struct
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[str] = ..., qrels: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ..., alphas: _Optional[_Iterable[float]] = ..., fusion: _Optional[_Iterable[str]] = ..., k: _Optional[_Iterable[int]] = ..., vector: _Optional[str] = ..., filter: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: _struct_pb2.Struct
    def __init__(self, report: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
