from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VectorizeRequest(_message.Message):
    __slots__ = ("texts", "images", "normalize")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    normalize: bool
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[bytes]] = ..., normalize: _Optional[bool] = ...) -> None: ...

class Vectors(_message.Message):
    __slots__ = ("data", "count")
    DATA_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    count: int
    def __init__(self, data: _Optional[bytes] = ..., count: _Optional[int] = ...) -> None: ...

class VectorizeResponse(_message.Message):
    __slots__ = ("text_vectors", "image_vectors", "model", "dimensions")
    TEXT_VECTORS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    text_vectors: Vectors
    image_vectors: Vectors
    model: str
    dimensions: int
    def __init__(self, text_vectors: _Optional[_Union[Vectors, _Mapping]] = ..., image_vectors: _Optional[_Union[Vectors, _Mapping]] = ..., model: _Optional[str] = ..., dimensions: _Optional[int] = ...) -> None: ...

class MetaRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_batch_size", "batch_wait_ms", "max_queue", "max_image_pixels", "max_request_bytes", "max_items_per_request", "max_batch_tokens", "batch_early_cut", "batch_wait_us")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEMS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BATCH_EARLY_CUT_FIELD_NUMBER: _ClassVar[int]
    BATCH_WAIT_US_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    batch_wait_ms: int
    max_queue: int
    max_image_pixels: int
    max_request_bytes: int
    max_items_per_request: int
    max_batch_tokens: int
    batch_early_cut: bool
    batch_wait_us: int
    def __init__(self, max_batch_size: _Optional[int] = ..., batch_wait_ms: _Optional[int] = ..., max_queue: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_request_bytes: _Optional[int] = ..., max_items_per_request: _Optional[int] = ..., max_batch_tokens: _Optional[int] = ..., batch_early_cut: _Optional[bool] = ..., batch_wait_us: _Optional[int] = ...) -> None: ...

class MetaResponse(_message.Message):
    __slots__ = ("name", "type", "dimensions", "modalities", "device", "precision", "limits", "normalize", "max_text_tokens", "max_text_chars", "kind", "function_name", "vocab_size", "sparse_prune_ratio", "sparse_max_terms", "runtime")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    SPARSE_PRUNE_RATIO_FIELD_NUMBER: _ClassVar[int]
    SPARSE_MAX_TERMS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    dimensions: int
    modalities: _containers.RepeatedScalarFieldContainer[str]
    device: str
    precision: str
    limits: Limits
    normalize: bool
    max_text_tokens: int
    max_text_chars: int
    kind: str
    function_name: str
    vocab_size: int
    sparse_prune_ratio: float
    sparse_max_terms: int
    runtime: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., dimensions: _Optional[int] = ..., modalities: _Optional[_Iterable[str]] = ..., device: _Optional[str] = ..., precision: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., normalize: _Optional[bool] = ..., max_text_tokens: _Optional[int] = ..., max_text_chars: _Optional[int] = ..., kind: _Optional[str] = ..., function_name: _Optional[str] = ..., vocab_size: _Optional[int] = ..., sparse_prune_ratio: _Optional[float] = ..., sparse_max_terms: _Optional[int] = ..., runtime: _Optional[str] = ...) -> None: ...

class VectorizeSparseRequest(_message.Message):
    __slots__ = ("texts", "return_tokens")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    RETURN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    return_tokens: bool
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., return_tokens: _Optional[bool] = ...) -> None: ...

class SparseVector(_message.Message):
    __slots__ = ("indices", "values", "tokens")
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    indices: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, indices: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ..., tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class VectorizeSparseResponse(_message.Message):
    __slots__ = ("vectors", "model", "vocab_size")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[SparseVector]
    model: str
    vocab_size: int
    def __init__(self, vectors: _Optional[_Iterable[_Union[SparseVector, _Mapping]]] = ..., model: _Optional[str] = ..., vocab_size: _Optional[int] = ...) -> None: ...
