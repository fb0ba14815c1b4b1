"""EdgeStore: the embedded store on qdrant-edge (Qdrant's engine in-process), one EdgeShard per collection.

Layout under ``data_dir``::

    collections/<name>/schema.json   the CollectionSchema (written last: a folder without it is a half-made
                                     collection and is removed on start)
    collections/<name>/shard/        the EdgeShard (segments, WAL, payload, HNSW and sparse indexes)
    system/definitions/              EdgeShard holding the gateway's collection definitions

Every shard is guarded by its own lock; the store-wide lock only guards the name -> shard map. HNSW is
configured per collection (m / ef_construct from the schema) and built by the shard's optimizer once
enough unindexed points have been written (and on ``optimize``) -- in a child process on a copy of the
shard that is then swapped in (:mod:`gateway.storage.edge_optimizer`), because qdrant-edge holds the GIL
while it optimises. During a build the collection's reads and writes go on: writes wait only while the
shard is copied and while the last of them are replayed onto the built copy and it is swapped in.
Hybrid search: RRF runs inside the engine (Query API prefetch + weighted ``Fusion.Rrf``); relative-score
fusion fetches both lists in one ``query_batch`` call and fuses them with ``gateway.storage.fusion``
(min-max normalisation needs each list's best and worst score, which the engine does not expose).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import qdrant_edge as qe

from gateway.gc_pause import gc_paused
from gateway.storage import edge_optimizer
from gateway.storage.base import (
    SYSTEM_COLLECTION,
    CollectionNotFound,
    CollectionSchema,
    Condition,
    DenseQuery,
    DenseVectorConfig,
    FacetValue,
    FieldAny,
    FieldDatetimeRange,
    FieldGeoBox,
    FieldGeoRadius,
    FieldIsEmpty,
    FieldIsNull,
    FieldMatch,
    FieldPrefix,
    FieldRange,
    FieldText,
    FieldValuesCount,
    Filter,
    FusedPart,
    FusedPlan,
    FusedQuery,
    GeoPoint,
    Hit,
    HybridQuery,
    IndexInfo,
    Mmr,
    OrderBy,
    PayloadIndex,
    PointRecord,
    SearchSpec,
    SparseQuery,
    SparseVec,
    Store,
    StoreError,
    WithPayload,
    as_fused,
    check_mmr,
    check_order_by,
    check_paging,
    definition_point_id,
    index_spec,
    narrow_payload,
    normalize_id,
    plan_fused,
    records_in_order,
    to_point_record,
    validate_collection_name,
)
from gateway.storage.data_dir_lock import DataDirLock
from gateway.storage.fusion import RRF_K, Fused, Ranked, fuse_lists

log = logging.getLogger(__name__)

_DISTANCE = {"cosine": qe.Distance.Cosine, "dot": qe.Distance.Dot, "euclid": qe.Distance.Euclid}
_INDEX_KINDS = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
    "datetime": qe.PayloadSchemaType.Datetime,
    "uuid": qe.PayloadSchemaType.Uuid,
    "text": qe.PayloadSchemaType.Text,
    "geo": qe.PayloadSchemaType.Geo,
}
_KIND_OF = {str(v): k for k, v in _INDEX_KINDS.items()}
_STOPWORDS = {n.lower(): getattr(qe.Language, n) for n in dir(qe.Language) if not n.startswith("_")}
_STEMMERS = {n.lower(): getattr(qe.SnowballLanguage, n) for n in dir(qe.SnowballLanguage)
             if not n.startswith("_")}
_TEXT_MATCH: dict[str, Any] = {"any": qe.MatchTextAny, "all": qe.MatchText, "phrase": qe.MatchPhrase}
_DIRECTION = {"asc": qe.Direction.Asc, "desc": qe.Direction.Desc}
# Payload indexes on collections with at least this many points are built out of process (they hold
# the GIL: ~1 s per field at 100k points).
INDEX_IN_PROCESS_POINTS = 10_000
DEFAULT_HNSW_M = 16
DEFAULT_HNSW_EF_CONSTRUCT = 100
# Segments smaller than this (KB of vectors) are searched by full scan, bigger ones get HNSW.
FULL_SCAN_THRESHOLD_KB = 10_000
# Build indexes in the background once this many points were written since the last optimisation.
AUTO_OPTIMIZE_POINTS = 20_000
# Writes journaled during an index build are replayed onto the built copy in up to this many rounds while
# writers go on, until at most this many are left; those are replayed with writers stopped.
CATCH_UP_ROUNDS = 8
CATCH_UP_DONE_WRITES = 16


def convert_filter(flt: Filter | None) -> qe.Filter | None:
    """gateway Filter -> qdrant_edge Filter (None for no filter)."""
    if flt is None:
        return None
    return _filter(flt)


def _filter(flt: Filter) -> qe.Filter:
    return qe.Filter(
        must=[_condition(c) for c in flt.must] or None,
        should=[_condition(c) for c in flt.should] or None,
        must_not=[_condition(c) for c in flt.must_not] or None,
    )


def _condition(cond: Condition) -> Any:
    if isinstance(cond, Filter):
        return _filter(cond)
    if isinstance(cond, FieldMatch):
        value: Any = cond.value
        if isinstance(value, float):  # Qdrant matches str/int/bool; a float equality is a closed range
            return qe.FieldCondition(cond.key, range=qe.RangeFloat(gte=value, lte=value))
        if isinstance(value, bool):
            # qdrant-edge 0.9 reads a Python bool as an integer (True -> 1) and then matches nothing;
            # numpy.bool_ is not an int subclass, so it arrives as a real boolean.
            value = np.bool_(value)
        return qe.FieldCondition(cond.key, match=qe.MatchValue(value))
    if isinstance(cond, FieldAny):
        return qe.FieldCondition(cond.key, match=qe.MatchAny(cast(Any, list(cond.values))))
    if isinstance(cond, FieldRange):
        return qe.FieldCondition(
            cond.key, range=qe.RangeFloat(gt=cond.gt, gte=cond.gte, lt=cond.lt, lte=cond.lte)
        )
    if isinstance(cond, FieldDatetimeRange):
        return qe.FieldCondition(
            cond.key, range=qe.RangeDateTime(gt=cond.gt, gte=cond.gte, lt=cond.lt, lte=cond.lte)
        )
    if isinstance(cond, FieldText):
        return qe.FieldCondition(cond.key, match=_TEXT_MATCH[cond.mode](cond.text))
    if isinstance(cond, FieldPrefix):
        return qe.FieldCondition(cond.key, match=qe.MatchPrefix(cond.prefix))
    if isinstance(cond, FieldGeoRadius):
        return qe.FieldCondition(cond.key, geo_radius=qe.GeoRadius(_geo(cond.center), float(cond.meters)))
    if isinstance(cond, FieldGeoBox):
        return qe.FieldCondition(
            cond.key, geo_bounding_box=qe.GeoBoundingBox(_geo(cond.top_left), _geo(cond.bottom_right))
        )
    if isinstance(cond, FieldIsEmpty):
        return qe.IsEmptyCondition(cond.key)
    if isinstance(cond, FieldIsNull):
        return qe.IsNullCondition(cond.key)
    if isinstance(cond, FieldValuesCount):
        return qe.FieldCondition(
            cond.key, values_count=qe.ValuesCount(gt=cond.gt, gte=cond.gte, lt=cond.lt, lte=cond.lte)
        )
    raise StoreError(f"filter: unsupported condition {cond!r}")


def _geo(point: GeoPoint) -> qe.GeoPoint:
    return qe.GeoPoint(float(point.lon), float(point.lat))


def edge_index_schema(spec: PayloadIndex) -> Any:
    """The qdrant-edge schema of a payload index: a type, or TextIndexParams for text (word tokens,
    lowercased, phrase matching on; with a language, its stopwords and Snowball stemmer)."""
    if spec.kind != "text":
        return _INDEX_KINDS[spec.kind]
    kwargs: dict[str, Any] = {"tokenizer": qe.TokenizerType.Word, "lowercase": True, "phrase_matching": True}
    if spec.language is not None:
        if spec.language not in _STOPWORDS and spec.language not in _STEMMERS:
            raise StoreError(f"language: unknown language {spec.language!r}")
        if spec.language in _STOPWORDS:
            kwargs["stopwords"] = _STOPWORDS[spec.language]
        if spec.language in _STEMMERS:
            kwargs["stemmer"] = qe.SnowballParams(_STEMMERS[spec.language])
    return qe.TextIndexParams(**kwargs)


def _with_payload(with_payload: WithPayload) -> Any:
    if isinstance(with_payload, bool):
        return with_payload
    return [str(k) for k in with_payload]


def _payload(value: Any, with_payload: WithPayload) -> dict[str, Any] | None:
    if with_payload is False:
        return None
    return dict(value or {})


class _Collection:
    """One open shard with its schema, lock and background-optimiser bookkeeping."""

    def __init__(self, schema: CollectionSchema, shard: qe.EdgeShard, path: Path) -> None:
        self.schema = schema
        self.shard = shard
        self.path = path
        self.lock = threading.RLock()  # held for each engine call (short)
        # held by writers (one at a time, so the journal's order is the shard's), and by an index build
        # while it copies the shard and while it replays the journal's tail and swaps the copy in
        self.write_gate = threading.Lock()
        self.build_lock = threading.Lock()  # one index build at a time
        # while an index build runs: every write applied to the live shard since the copy was made, as
        # ``fn(shard)``, to be replayed onto the built copy before it replaces the live shard
        self.journal: list[Any] | None = None
        self.closed = False
        self.deleted = False  # closed by delete_collection: the folder goes too
        self.unoptimized_writes = 0
        self.optimizing = False


def _schema_to_json(schema: CollectionSchema) -> dict[str, Any]:
    data = asdict(schema)
    data["dense"] = {k: {"size": v.size, "distance": v.distance} for k, v in schema.dense.items()}
    return data


def _schema_from_json(data: dict[str, Any]) -> CollectionSchema:
    dense = {k: DenseVectorConfig(**v) for k, v in data.get("dense", {}).items()}
    return CollectionSchema(**{**data, "dense": dense, "sparse": list(data.get("sparse", [])),
                               "sparse_plain": list(data.get("sparse_plain", []))})


def _edge_config(schema: CollectionSchema, threshold_kb: int = FULL_SCAN_THRESHOLD_KB) -> qe.EdgeConfig:
    hnsw = qe.HnswIndexConfig(
        m=DEFAULT_HNSW_M if schema.hnsw_m is None else schema.hnsw_m,
        ef_construct=(
            DEFAULT_HNSW_EF_CONSTRUCT if schema.hnsw_ef_construct is None else schema.hnsw_ef_construct
        ),
        full_scan_threshold=threshold_kb,
    )
    vectors = {
        name: qe.EdgeVectorParams(size=cfg.size, distance=_DISTANCE[cfg.distance])
        for name, cfg in schema.dense.items()
    }
    sparse = {name: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf) for name in schema.sparse}
    sparse.update({name: qe.EdgeSparseVectorParams() for name in schema.sparse_plain})  # no IDF
    return qe.EdgeConfig(
        vectors=vectors or None,
        sparse_vectors=sparse or None,
        hnsw_config=hnsw,
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=threshold_kb),
    )


_SYSTEM_SCHEMA_DENSE = {"_": DenseVectorConfig(size=1, distance="dot")}


@dataclass
class _Planned:
    """One search of a batch: its engine requests, and the fused plan when the lists are fused here."""

    spec: SearchSpec
    requests: list[Any]
    fused: FusedPlan | None = None
    fusion: str = "rrf"


class EdgeStore(Store):
    """Embedded store: qdrant-edge shards under ``data_dir`` (created if missing), kept across restarts.

    ``hnsw_ef``: size of the HNSW candidate list at search time (default: the index's ef_construct);
    larger = better recall, slower. ``indexing_threshold_kb``: segments with more vector data than this
    get an HNSW index (smaller ones are scanned exactly); fixed per collection when it is created.
    ``auto_optimize_points``: after this many written points the indexes are rebuilt in the background
    (0 = never; call ``optimize``). Index builds run in a child process on a copy of the shard
    (:mod:`gateway.storage.edge_optimizer`: qdrant-edge holds the GIL while optimising); meanwhile the
    collection answers reads from the live shard and applies writes to it, journaling them; the journal
    is replayed onto the built copy before it is swapped in, so writes wait only while the shard is
    copied and for the journal's last few writes and the swap. ``index_in_process_points``: a
    payload index on a collection with at least this many points is built the same way.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        auto_optimize_points: int = AUTO_OPTIMIZE_POINTS,
        indexing_threshold_kb: int = FULL_SCAN_THRESHOLD_KB,
        hnsw_ef: int | None = None,
        index_in_process_points: int = INDEX_IN_PROCESS_POINTS,
    ) -> None:
        self.data_dir = Path(data_dir)
        # DataDirInUse when another process has it; released by close() (or when a failed __init__ drops it)
        self._dir_lock = DataDirLock.acquire(self.data_dir)
        self._params = qe.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef else None
        self._threshold_kb = indexing_threshold_kb
        self._collections_dir = self.data_dir / "collections"
        self._collections_dir.mkdir(parents=True, exist_ok=True)
        self._auto_optimize_points = auto_optimize_points
        self._index_in_process_points = index_in_process_points
        self._lock = threading.RLock()
        self._open: dict[str, _Collection] = {}
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._cleanup_half_created()
        self._system = self._open_system()

    # -- internals ---------------------------------------------------------------------------
    def _cleanup_half_created(self) -> None:
        for entry in self._collections_dir.iterdir():
            if entry.is_dir() and not (entry / "schema.json").exists():
                log.warning("removing half-created collection folder %s", entry)
                shutil.rmtree(entry, ignore_errors=True)

    def _open_system(self) -> _Collection:
        path = self.data_dir / "system" / "definitions"
        schema = CollectionSchema(name="system-definitions", dense=dict(_SYSTEM_SCHEMA_DENSE))
        if (path / "shard").exists():
            shard = qe.EdgeShard.load(str(path / "shard"))
        else:
            path.mkdir(parents=True, exist_ok=True)
            shard = qe.EdgeShard.create(str(path / "shard"), _edge_config(schema))
        return _Collection(schema, shard, path)

    def _get(self, name: str) -> _Collection:
        if self._closed:
            raise StoreError("store is closed")
        with self._lock:
            coll = self._open.get(name)
            if coll is not None:
                return coll
            if not isinstance(name, str) or name.startswith("_") or name == SYSTEM_COLLECTION:
                raise CollectionNotFound(str(name))
            try:
                validate_collection_name(name)
            except StoreError as exc:
                raise CollectionNotFound(name) from exc
            path = self._collections_dir / name
            schema_file = path / "schema.json"
            if not schema_file.exists():
                raise CollectionNotFound(name)
            schema = _schema_from_json(json.loads(schema_file.read_text()))
            edge_optimizer.recover(path / "shard")
            shard = qe.EdgeShard.load(str(path / "shard"))
            coll = _Collection(schema, shard, path)
            self._open[name] = coll
            return coll

    def _check_dense(self, coll: _Collection, vector_name: str, vector: Sequence[float]) -> list[float]:
        cfg = coll.schema.dense.get(vector_name)
        if cfg is None:
            raise StoreError(
                f"vector: {vector_name!r} is not a dense vector of collection {coll.schema.name!r}"
            )
        if len(vector) != cfg.size:
            raise StoreError(f"vector: {vector_name!r} needs {cfg.size} dimensions, got {len(vector)}")
        return [float(x) for x in vector]

    def _check_sparse(self, coll: _Collection, vector_name: str, sparse: SparseVec) -> qe.SparseVector:
        if vector_name not in coll.schema.sparse_names:
            raise StoreError(
                f"vector: {vector_name!r} is not a sparse vector of collection {coll.schema.name!r}"
            )
        return qe.SparseVector([int(i) for i in sparse.indices], [float(v) for v in sparse.values])

    def _point(self, coll: _Collection, rec: PointRecord) -> qe.Point:
        vectors: dict[str, Any] = {}
        for vname, vec in rec.dense.items():
            vectors[vname] = self._check_dense(coll, vname, vec)
        for vname, sv in rec.sparse.items():
            checked = self._check_sparse(coll, vname, sv)
            if sv.indices:  # an empty sparse vector is stored as "no vector" (keeps BM25's N exact)
                vectors[vname] = checked
        return qe.Point(normalize_id(rec.id), vectors, dict(rec.payload))

    def _run(self, coll: _Collection, fn: Any) -> Any:
        with coll.lock:
            if coll.closed:
                raise CollectionNotFound(coll.schema.name)
            try:
                return fn(coll.shard)
            except (CollectionNotFound, StoreError):
                raise
            except Exception as exc:  # qdrant-edge raises plain RuntimeError/ValueError
                raise StoreError(f"{coll.schema.name}: {exc}") from exc

    def _write(self, coll: _Collection, fn: Any) -> Any:
        """Apply the write ``fn(shard)`` to the live shard (the caller holds ``coll.write_gate``) and, while
        an index build runs, journal it for the built copy."""
        result = self._run(coll, fn)
        if coll.journal is not None:
            coll.journal.append(fn)
        return result

    def _hits(self, points: list[Any], with_payload: WithPayload) -> list[Hit]:
        return [Hit(str(p.id), float(p.score), _payload(p.payload, with_payload)) for p in points]

    def _maybe_optimize(self, coll: _Collection, written: int) -> None:
        with coll.lock:
            coll.unoptimized_writes += written
            threshold = self._auto_optimize_points
            if threshold <= 0 or coll.optimizing or coll.unoptimized_writes < threshold:
                return
            coll.optimizing = True
            coll.unoptimized_writes = 0  # writes during the build count towards the next one
        thread = threading.Thread(target=self._optimize_bg, args=(coll,), daemon=True, name="edge-optimize")
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _optimize_bg(self, coll: _Collection) -> None:
        try:
            self._optimize(coll)
        except StoreError as exc:
            log.warning("background optimisation of %s failed: %s", coll.schema.name, exc)
        finally:
            coll.optimizing = False

    def _optimize(self, coll: _Collection, indexes: Sequence[dict[str, Any]] = (),
                  optimize: bool = True) -> None:
        """Rebuild the collection's indexes out of process (and create the payload ``indexes``); reads and
        writes go on meanwhile (see EdgeStore)."""
        with coll.build_lock:
            shard_dir = coll.path / "shard"
            with coll.write_gate:  # a consistent copy: no write lands while it is made
                if coll.closed:
                    return
                self._run(coll, lambda s: s.flush())
                try:
                    work = edge_optimizer.copy_shard(shard_dir)
                except OSError as exc:
                    raise StoreError(f"{coll.schema.name}: copying the shard failed: {exc}") from exc
                coll.journal = []
            try:
                edge_optimizer.build_in_child(work, indexes=indexes, optimize=optimize)
                self._swap_built(coll, shard_dir, work)
            except (OSError, edge_optimizer.OptimizeError) as exc:
                raise StoreError(f"{coll.schema.name}: {exc}") from exc
            finally:
                with coll.write_gate:
                    coll.journal = None
                shutil.rmtree(work, ignore_errors=True)  # only still there when the swap did not happen
                if coll.deleted:  # deleted during the build, which may still have been writing the copy
                    shutil.rmtree(coll.path, ignore_errors=True)

    def _swap_built(self, coll: _Collection, shard_dir: Path, work: Path) -> None:
        """Replay the writes journaled during the build onto the built copy ``work``, then swap it in.

        The journal is replayed while writers go on, in rounds, until what is left is short; the rest
        is replayed with writers stopped, the copy flushed and swapped in. Until the swap the live
        shard holds every acknowledged write; from the swap on, the copy does (kill -9 anywhere leaves
        one of them in place: edge_optimizer.recover)."""
        if coll.closed:  # deleted or store closed meanwhile
            return
        try:
            built = qe.EdgeShard.load(str(work))
        except Exception as exc:  # qdrant-edge raises plain RuntimeError
            raise edge_optimizer.OptimizeError(f"loading the built copy {work} failed: {exc}") from exc
        try:
            done = 0
            for _ in range(CATCH_UP_ROUNDS):
                with coll.write_gate:
                    pending = list((coll.journal or [])[done:])
                if len(pending) <= CATCH_UP_DONE_WRITES:
                    break
                for fn in pending:
                    fn(built)
                done += len(pending)
            with coll.write_gate:
                for fn in (coll.journal or [])[done:]:
                    fn(built)
                built.flush()
                built.close()
                with coll.lock:
                    if coll.closed:  # deleted or store closed meanwhile
                        return
                    coll.shard.close()
                    try:
                        edge_optimizer.swap_in(shard_dir, work)
                    finally:
                        coll.shard = qe.EdgeShard.load(str(shard_dir))
        except Exception as exc:
            try:
                built.close()
            except Exception:  # noqa: BLE001 - already closed
                pass
            if isinstance(exc, edge_optimizer.OptimizeError | OSError):
                raise
            raise edge_optimizer.OptimizeError(f"replaying writes onto {work} failed: {exc}") from exc

    # -- collections -------------------------------------------------------------------------
    def create_collection(self, schema: CollectionSchema) -> None:
        if self._closed:
            raise StoreError("store is closed")
        with self._lock:
            path = self._collections_dir / schema.name
            if path.exists():
                raise StoreError(f"name: collection {schema.name!r} already exists")
            try:
                path.mkdir(parents=True)
                shard = qe.EdgeShard.create(str(path / "shard"), _edge_config(schema, self._threshold_kb))
                tmp = path / "schema.json.tmp"
                tmp.write_text(json.dumps(_schema_to_json(schema)))
                tmp.replace(path / "schema.json")
            except Exception as exc:
                shutil.rmtree(path, ignore_errors=True)
                raise StoreError(f"creating collection {schema.name!r} failed: {exc}") from exc
            self._open[schema.name] = _Collection(schema, shard, path)

    def delete_collection(self, name: str) -> bool:
        try:
            coll = self._get(name)
        except CollectionNotFound:
            return False
        with self._lock:
            self._open.pop(name, None)
            (coll.path / "schema.json").unlink(missing_ok=True)  # from now on nobody can open it again
        with coll.write_gate, coll.lock:  # an index build in flight is discarded (it sees ``closed``)
            if not coll.closed:
                coll.closed = True
                coll.deleted = True
                try:
                    coll.shard.close()
                finally:
                    if coll.build_lock.acquire(blocking=False):
                        try:
                            shutil.rmtree(coll.path, ignore_errors=True)
                        finally:
                            coll.build_lock.release()
                    # else the index build in flight removes the folder when it ends
        return True

    def collection_exists(self, name: str) -> bool:
        try:
            self._get(name)
        except CollectionNotFound:
            return False
        return True

    def schema(self, name: str) -> CollectionSchema:
        """The schema a collection was created with."""
        return self._get(name).schema

    def list_collections(self) -> list[str]:
        """Names of all collections (sorted)."""
        return sorted(
            p.name for p in self._collections_dir.iterdir() if p.is_dir() and (p / "schema.json").exists()
        )

    def create_payload_index(self, name: str, key: str, kind: str | PayloadIndex) -> None:
        """Index payload field ``key`` for fast filtering (out of process on a big collection)."""
        coll = self._get(name)
        spec = index_spec(kind)
        if not isinstance(key, str) or not key:
            raise StoreError("key: must be a non-empty field name")
        schema = edge_index_schema(spec)
        if self.count(name) >= self._index_in_process_points:
            self._optimize(coll, [{"key": key, "kind": spec.kind, "language": spec.language}], optimize=False)
            return
        op = qe.UpdateOperation.create_field_index(key, schema)
        with coll.write_gate:
            self._write(coll, lambda s: s.update(op))

    def payload_indexes(self, name: str) -> dict[str, IndexInfo]:
        coll = self._get(name)
        info = self._run(coll, lambda s: s.info())
        return {key: IndexInfo(_KIND_OF.get(str(v.data_type), str(v.data_type)), int(v.points))
                for key, v in info.payload_schema.items()}

    def optimize(self, name: str) -> None:
        """Build HNSW / sparse indexes now (returns when the new indexes are in use)."""
        self._optimize(self._get(name))

    # -- points ------------------------------------------------------------------------------
    def upsert(self, name: str, points: Sequence[PointRecord]) -> None:
        coll = self._get(name)
        if not points:
            return
        converted = [self._point(coll, p) for p in points]
        with coll.write_gate:
            self._write(coll, lambda s: s.update(qe.UpdateOperation.upsert_points(converted)))
        self._maybe_optimize(coll, len(converted))

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[PointRecord]:
        coll = self._get(name)
        norm = [normalize_id(i) for i in ids]
        if not norm:
            return []
        records = self._run(coll, lambda s: s.retrieve(norm, with_payload=True, with_vector=with_vectors))
        return records_in_order(norm, records, with_vectors, qe.SparseVector)

    def delete_points(self, name: str, ids: Sequence[str]) -> None:
        coll = self._get(name)
        norm = [normalize_id(i) for i in ids]
        if norm:
            with coll.write_gate:
                self._write(coll, lambda s: s.update(qe.UpdateOperation.delete_points(cast(Any, norm))))

    def count(self, name: str, filter: Filter | None = None, exact: bool = True) -> int:
        coll = self._get(name)
        request = qe.CountRequest(exact=bool(exact), filter=convert_filter(filter))
        return int(self._run(coll, lambda s: s.count(request)))

    def delete_by_filter(self, name: str, filter: Filter | None) -> int:
        coll = self._get(name)
        qfilter = convert_filter(filter) or qe.Filter()
        request = qe.CountRequest(exact=True, filter=qfilter)
        op = qe.UpdateOperation.delete_points_by_filter(qfilter)
        with coll.write_gate:  # no write of this gateway lands between the count and the delete
            matched = int(self._run(coll, lambda s: s.count(request)))
            if matched:
                self._write(coll, lambda s: s.update(op))
        return matched

    def scroll(
        self,
        name: str,
        *,
        filter: Filter | None = None,
        limit: int = 256,
        cursor: str | None = None,
        with_payload: WithPayload = True,
        with_vectors: bool = False,
    ) -> tuple[list[PointRecord], str | None]:
        coll = self._get(name)
        check_paging(limit, 0)
        request = qe.ScrollRequest(offset=None if cursor is None else normalize_id(cursor), limit=limit,
                                   filter=convert_filter(filter), with_payload=_with_payload(with_payload),
                                   with_vector=with_vectors)

        def read(shard: qe.EdgeShard) -> tuple[list[PointRecord], Any]:
            with gc_paused():  # a page is thousands of new objects (see gateway.gc_pause)
                records, nxt = shard.scroll(request)
                if with_vectors:
                    return [to_point_record(r, True, qe.SparseVector) for r in records], nxt
                # the common case, kept lean (~13% less time than to_point_record): each payload is new
                ids = id_strings([r.id for r in records])
                return [PointRecord(i, r.payload or {}) for i, r in zip(ids, records, strict=True)], nxt

        page, nxt = self._run(coll, read)
        return page, None if nxt is None else str(nxt)

    def update_sparse(self, name: str, vector_name: str, vectors: Sequence[tuple[str, SparseVec]]) -> None:
        coll = self._get(name)
        updates, removed = [], []
        for pid, sv in vectors:
            checked = self._check_sparse(coll, vector_name, sv)
            if sv.indices:
                updates.append(qe.PointVectors(normalize_id(pid), {vector_name: checked}))
            else:
                removed.append(normalize_id(pid))
        with coll.write_gate:
            if updates:
                self._write(coll, lambda s: s.update(qe.UpdateOperation.update_vectors(updates)))
            if removed:
                # re-written without the vector: deleting it alone would leave it counted in BM25's N
                records = self._run(coll, lambda s: s.retrieve(removed, with_payload=True, with_vector=True))
                points = []
                for rec in records_in_order(removed, records, True, qe.SparseVector):
                    rec.sparse.pop(vector_name, None)
                    points.append(self._point(coll, rec))
                if points:
                    self._write(coll, lambda s: s.update(qe.UpdateOperation.upsert_points(points)))

    # -- search ------------------------------------------------------------------------------
    def search_dense(
        self,
        name: str,
        vector_name: str,
        vector: Sequence[float],
        *,
        filter: Filter | None = None,
        limit: int = 10,
        offset: int = 0,
        with_payload: WithPayload = True,
        mmr: Mmr | None = None,
    ) -> list[Hit]:
        coll = self._get(name)
        values = self._check_dense(coll, vector_name, vector)
        check_mmr(mmr, limit, offset)
        if mmr is None:
            query: Any = qe.Query.Nearest(values, using=vector_name)
        else:
            query = qe.Mmr(values, float(mmr.lambda_), mmr.candidates, using=vector_name)
        return self._nearest(coll, query, filter, limit, offset, with_payload, params=self._params)

    def browse(
        self,
        name: str,
        *,
        filter: Filter | None = None,
        order_by: OrderBy | None = None,
        limit: int = 10,
        offset: int = 0,
        with_payload: WithPayload = True,
    ) -> list[Hit]:
        coll = self._get(name)
        check_order_by(order_by)
        query = None if order_by is None else qe.OrderBy(order_by.key, _DIRECTION[order_by.direction])
        hits = self._nearest(coll, query, filter, limit, offset, with_payload)
        return [Hit(h.id, 0.0, h.payload) for h in hits]

    def facet(self, name: str, key: str, *, filter: Filter | None = None, limit: int = 10,
              exact: bool = False) -> list[FacetValue]:
        coll = self._get(name)
        check_paging(limit, 0)
        request = qe.FacetRequest(key, limit=limit, exact=bool(exact), filter=convert_filter(filter))
        response = self._run(coll, lambda s: s.facet(request))
        return [FacetValue(_facet_value(h.value), int(h.count)) for h in response.hits]

    def search_sparse(
        self,
        name: str,
        vector_name: str,
        sparse: SparseVec,
        *,
        filter: Filter | None = None,
        limit: int = 10,
        offset: int = 0,
        with_payload: WithPayload = True,
    ) -> list[Hit]:
        coll = self._get(name)
        query = qe.Query.Nearest(self._check_sparse(coll, vector_name, sparse), using=vector_name)
        return self._nearest(coll, query, filter, limit, offset, with_payload)

    def _nearest(self, coll: _Collection, query: Any, filter: Filter | None, limit: int, offset: int,
                 with_payload: WithPayload, params: Any = None) -> list[Hit]:
        """One nearest-neighbour query (dense or sparse) with filter, paging and payload selection."""
        check_paging(limit, offset)
        request = qe.QueryRequest(
            limit=limit,
            offset=offset,
            query=query,
            filter=convert_filter(filter),
            params=params,
            with_payload=_with_payload(with_payload),
            with_vector=False,
        )
        return self._hits(self._run(coll, lambda s: s.query(request)), with_payload)

    def search_fused(
        self,
        name: str,
        parts: Sequence[FusedPart],
        *,
        fusion: str = "rrf",
        filter: Filter | None = None,
        limit: int = 10,
        offset: int = 0,
        with_payload: WithPayload = True,
        prefetch_limit: int | None = None,
    ) -> list[Hit]:
        coll = self._get(name)
        plan = plan_fused(parts, fusion, limit, offset, prefetch_limit)
        candidates = plan.candidates
        qfilter = convert_filter(filter)
        queries = [qe.Query.Nearest(self._checked(coll, p), using=p.vector_name) for p in plan.parts]
        if fusion == "rrf":
            # in-engine: Qdrant's weighted RRF is exactly the documented formula (gateway.storage.fusion)
            request = qe.QueryRequest(
                limit=limit,
                offset=offset,
                query=cast(Any, qe.Fusion.Rrf(k=RRF_K, weights=plan.rrf_weights)),
                prefetches=[qe.Prefetch(limit=candidates, query=q, filter=qfilter, params=self._params)
                            for q in queries],
                with_payload=_with_payload(with_payload),
                with_vector=False,
            )
            return self._hits(self._run(coll, lambda s: s.query(request)), with_payload)
        # relative score needs each list's min and max: every list in one batch, fused here
        requests = [qe.QueryRequest(limit=candidates, query=q, filter=qfilter, with_payload=False,
                                    params=self._params) for q in queries]
        results = self._run(coll, lambda s: s.query_batch(qe.QueryBatchRequest(requests)))
        # keyed by the UUID's int (cheap to hash); only the final page is turned into strings
        lists = [(p.weight, [Ranked(_id_key(h.id), h.score) for h in res])
                 for p, res in zip(plan.parts, results, strict=True)]
        page = fuse_lists(fusion, lists, top=offset + limit)[offset:]
        fused = [Fused(_id_str(f.id), float(f.score)) for f in page]
        return self._with_payloads(coll, fused, with_payload)

    def _checked(self, coll: _Collection, part: FusedPart) -> Any:
        """A fused search's list as the engine's query (dense or sparse), checked against the schema."""
        if isinstance(part.vector, SparseVec):
            return self._check_sparse(coll, part.vector_name, part.vector)
        return self._check_dense(coll, part.vector_name, part.vector)

    def _with_payloads(
        self, coll: _Collection, fused: list[Fused], with_payload: WithPayload
    ) -> list[Hit]:
        if with_payload is False or not fused:
            return [Hit(str(f.id), f.score, None) for f in fused]
        ids = [str(f.id) for f in fused]
        selector = _with_payload(with_payload)
        records = self._run(coll, lambda s: s.retrieve(ids, with_payload=selector, with_vector=False))
        payloads = {str(r.id): dict(r.payload or {}) for r in records}
        return [Hit(str(f.id), f.score, payloads.get(str(f.id), {})) for f in fused]

    def search_batch(self, name: str, searches: Sequence[SearchSpec]) -> list[list[Hit]]:
        """Every search's engine requests go to the shard in one ``query_batch`` call.

        RRF hybrid runs inside the engine (prefetch + weighted ``Fusion.Rrf``); relative-score hybrid
        fetches both lists in the same batch and fuses them here (min-max normalisation needs each
        list's best and worst score, which the engine does not expose).
        """
        coll = self._get(name)
        planned = [self._plan(coll, spec) for spec in searches]
        requests = [r for p in planned for r in p.requests]
        if not requests:
            return []
        if len(requests) == 1:
            results = [self._run(coll, lambda s: s.query(requests[0]))]
        else:
            results = self._run(coll, lambda s: s.query_batch(qe.QueryBatchRequest(requests)))
        out: list[list[Hit]] = []
        fused: list[int] = []  # searches whose hits still need their payloads
        at = 0
        for i, p in enumerate(planned):
            lists = results[at:at + len(p.requests)]
            at += len(p.requests)
            spec = p.spec
            if p.fused is None:
                out.append(self._hits(lists[0], spec.with_payload))
                continue
            # keyed by the UUID's int (cheap to hash); only the final page is turned into strings
            ranked = [(part.weight, [Ranked(_id_key(pt.id), pt.score) for pt in res])
                      for part, res in zip(p.fused.parts, lists, strict=True)]
            page = fuse_lists(p.fusion, ranked, top=spec.offset + spec.limit)[spec.offset:]
            out.append([Hit(_id_str(f.id), float(f.score), None) for f in page])
            if spec.with_payload is not False and page:
                fused.append(i)
        if fused:
            self._fill_payloads(coll, [(out[i], searches[i].with_payload) for i in fused])
        return out

    def _plan(self, coll: _Collection, spec: SearchSpec) -> _Planned:
        """The engine requests of one search (checked), and the hybrid plan when it is fused here."""
        check_paging(spec.limit, spec.offset)
        query = spec.query
        qfilter = convert_filter(spec.filter)
        payload = _with_payload(spec.with_payload)

        def page(q: Any, params: Any) -> qe.QueryRequest:
            return qe.QueryRequest(limit=spec.limit, offset=spec.offset, query=q, filter=qfilter,
                                   params=params, with_payload=payload, with_vector=False)

        if isinstance(query, DenseQuery):
            vector = self._check_dense(coll, query.vector_name, query.vector)
            return _Planned(spec, [page(qe.Query.Nearest(vector, using=query.vector_name), self._params)])
        if isinstance(query, SparseQuery):
            sparse = self._check_sparse(coll, query.vector_name, query.vector)
            return _Planned(spec, [page(qe.Query.Nearest(sparse, using=query.vector_name), None)])
        if not isinstance(query, HybridQuery | FusedQuery):
            raise StoreError(f"query: unsupported query {query!r}")
        fq = as_fused(query)
        plan = plan_fused(fq.parts, fq.fusion, spec.limit, spec.offset, fq.prefetch_limit)
        queries = [qe.Query.Nearest(self._checked(coll, part), using=part.vector_name) for part in plan.parts]
        if fq.fusion == "rrf":
            # in-engine: Qdrant's weighted RRF is exactly the documented formula (gateway.storage.fusion)
            prefetches = [qe.Prefetch(limit=plan.candidates, query=q, filter=qfilter, params=self._params)
                          for q in queries]
            request = qe.QueryRequest(limit=spec.limit, offset=spec.offset,
                                      query=cast(Any, qe.Fusion.Rrf(k=RRF_K, weights=plan.rrf_weights)),
                                      prefetches=prefetches, with_payload=payload, with_vector=False)
            return _Planned(spec, [request])
        requests = [qe.QueryRequest(limit=plan.candidates, query=q, filter=qfilter, with_payload=False,
                                    params=self._params) for q in queries]
        return _Planned(spec, requests, plan, fq.fusion)

    def _fill_payloads(self, coll: _Collection, pages: list[tuple[list[Hit], WithPayload]]) -> None:
        """Fetch the payloads of fused hits, one retrieve for all of them."""
        ids = list(dict.fromkeys(h.id for hits, _ in pages for h in hits))
        records = self._run(coll, lambda s: s.retrieve(ids, with_payload=True, with_vector=False))
        payloads = {str(r.id): dict(r.payload or {}) for r in records}
        for hits, with_payload in pages:
            for hit in hits:
                hit.payload = narrow_payload(payloads.get(hit.id, {}), with_payload)

    # -- definitions -------------------------------------------------------------------------
    def save_definition(self, name: str, definition: dict[str, Any]) -> None:
        validate_collection_name(name)
        point = qe.Point(
            definition_point_id(name),
            {"_": [1.0]},
            {"name": name, "definition": json.dumps(definition, sort_keys=True)},
        )
        self._run(self._system, lambda s: s.update(qe.UpdateOperation.upsert_points([point])))
        self._run(self._system, lambda s: s.flush())

    def load_definition(self, name: str) -> dict[str, Any] | None:
        if not isinstance(name, str):
            return None
        pid = definition_point_id(name)
        records = self._run(self._system, lambda s: s.retrieve([pid], with_payload=True, with_vector=False))
        for rec in records:
            return json.loads(rec.payload["definition"])
        return None

    def list_definitions(self) -> list[dict[str, Any]]:
        out: list[tuple[str, dict[str, Any]]] = []
        offset: Any = None
        while True:
            request = qe.ScrollRequest(offset=offset, limit=256, with_payload=True, with_vector=False)
            records, offset = self._run(self._system, lambda s, r=request: s.scroll(r))
            out.extend((r.payload["name"], json.loads(r.payload["definition"])) for r in records)
            if offset is None:
                break
        return [d for _, d in sorted(out, key=lambda x: x[0])]

    def delete_definition(self, name: str) -> None:
        if not isinstance(name, str):
            return
        pid = definition_point_id(name)
        self._run(self._system, lambda s: s.update(qe.UpdateOperation.delete_points([pid])))
        self._run(self._system, lambda s: s.flush())

    # -- lifecycle ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Write everything pending to disk."""
        with self._lock:
            colls = list(self._open.values())
        for coll in [*colls, self._system]:
            self._run(coll, lambda s: s.flush())

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            colls = [*self._open.values(), self._system]
            self._open.clear()
        for thread in self._threads:
            thread.join()
        for coll in colls:
            with coll.lock:
                if coll.closed:
                    continue
                coll.closed = True
                try:
                    coll.shard.flush()
                finally:
                    coll.shard.close()
        self._dir_lock.release()


def _facet_value(value: Any) -> str | int | bool:
    if isinstance(value, bool | int | str):
        return value
    return str(value)  # a UUID


def id_strings(ids: list[Any]) -> list[str]:
    """``[str(i) for i in ids]`` for the engine's point ids (``uuid.UUID``, or int), the UUIDs formatted by
    orjson in one call: ~1 us less per id than ``UUID.__str__`` (a scrolled page is 1,000 of them)."""
    out: list[Any] = orjson.loads(orjson.dumps(ids))
    return [i if isinstance(i, str) else str(i) for i in out]


def _id_key(point_id: Any) -> Any:
    return point_id.int if isinstance(point_id, uuid.UUID) else str(point_id)


def _id_str(key: Any) -> str:
    return str(uuid.UUID(int=key)) if isinstance(key, int) else str(key)
