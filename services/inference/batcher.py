"""Dynamic batching across requests.

Callers (asyncio tasks) hand in texts or decoded images and await their
vectors. Items from all callers wait in one bounded queue and are cut into
batches:

* a batch holds one modality and at most ``max_batch_size`` items;
* the oldest waiting item starts the clock: a batch that is not full waits at
  most ``batch_wait_ms`` after that item arrived (or after the model last went
  idle, if later), a full one goes at once; while the model is busy only full
  batches are cut ahead, partial ones keep growing;
* the wait is skipped once as many requests have arrived as the last delivery
  answered: a lone caller, or a closed-loop crowd that is all back, gains
  nothing by waiting;
* when more texts wait than fit, the batch is the run of similar lengths
  (by ``Encoder.text_length``) that contains the oldest text, so padding is
  small and no text waits forever;
* with ``max_batch_tokens`` a text batch also holds at most that many tokens
  counted with padding (items x longest), so texts are always grouped by
  length: a forward pass's cost is its padded tokens, and a run of similar
  lengths wastes few of them (a text longer than the budget goes alone). The
  waiting texts, sorted by length, are split into the runs that cost the least
  in all, each run costing ``pass_tokens`` (a forward pass's fixed overhead,
  counted in padded tokens) plus its padded tokens; the batch is the run that
  holds the oldest text. So a mixed crowd of short and long texts runs as a few
  passes of similar lengths instead of one pass padded to the longest. A model
  whose padded positions cost less than its real tokens says so
  (``Encoder.padded_token_cost``: a masked LM whose vocabulary head runs on real
  tokens only pays for padding in its encoder alone, ~9% of a token's work for
  SPLADE-tiny): a text then counts as ``c x longest + (1 - c) x its own length``
  tokens, so such a model is split only where the padding costs more than the
  extra pass;
* with ``early_cut`` (``BATCH_EARLY_CUT``, off by default) a partial batch goes before its
  wait is over when the arrival rate shows that waiting will not pay: the items expected by the
  deadline would save less forward-pass overhead than the wait costs (see
  :mod:`services.inference.arrivals`);
* ``batching=False`` turns cross-request batching off: every request is its own
  forward pass (the baseline the benchmark compares against).

Three kinds of threads do the work: one scheduler thread cuts batches, a small
pool runs the CPU-side ``prepare_*`` step, and ONE model thread runs
``forward_*``. At most ``pipeline_depth`` batches are between cutting and the
end of their forward pass, so batch N+1 is prepared while batch N runs, and
items keep accumulating (into bigger batches) while the model is busy.
Images are prepared one by one as they arrive when the encoder can merge
prepared images (``Encoder.merges_prepared_images``): a partial batch is cut
only once the model is free, and preparing it then (decode, resize, normalise:
~4 ms an image on one thread) left the model idle ~17% of the time at 32
clients. At most ``2 x max_batch_size`` waiting images are prepared ahead (a
prepared image is ~600 KB); the rest are prepared when cut, as texts are.

Results are sliced back per caller, in the caller's order, normalised per
request if asked (a sparse encoder's sparse vectors are handed back as a
list), and handed to the caller's event loop with
``call_soon_threadsafe`` (once per event loop and batch). When a batch shared by several requests fails, each
request is run again on its own, so only the request that cannot be encoded
fails. A
caller that goes away (cancelled task) has its not-yet-started items dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from opentelemetry import trace

from services import tracing
from services.inference.arrivals import ArrivalRate, EarlyCut
from services.inference.loaders.base import IMAGE, TEXT, Encoder, l2_normalize

if TYPE_CHECKING:
    from PIL import Image

    from services.inference.metrics import Metrics

log = logging.getLogger(__name__)

#: a forward pass's fixed cost in padded tokens, for splitting waiting texts into batches
#: (``BATCH_PASS_TOKENS``; README, Performance, issue 8)
PASS_TOKENS = 64
#: how many batches' worth of texts either side of the oldest (in length order) a cut looks at
_WINDOW = 4


class QueueFull(Exception):
    """The bounded queue cannot take the items of this request now."""


class BatcherClosed(Exception):
    """The batcher is shutting down and takes no new work."""


class BatchFailed(RuntimeError):
    """The batch that held this request's items failed to prepare or run."""


@dataclass(eq=False)
class _Request:
    modality: str
    count: int
    normalize: bool
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    remaining: int = 0
    result: np.ndarray | list | None = None  # a list of SparseVector for sparse encoders
    done: bool = False  # delivered, failed or abandoned: its items are no longer wanted
    enqueued_ns: int = 0
    # one entry per batch that held items of this request, for its trace spans:
    # (preparation start, preparation end, forward start, forward end, batch size), wall-clock ns
    batches: list[tuple[int, int, int, int, int]] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class _Item:
    request: _Request
    pos: int
    payload: Any
    seq: int
    enqueued: float
    length: int | None = None
    early: Future | None = None  # an image's preparation, started at arrival


@dataclass(eq=False)
class _Batch:
    modality: str
    items: list[_Item]
    prepared: Future = field(default_factory=Future)
    prepare_ns: tuple[int, int] | None = None  # when the preparation thread worked on it
    forward_s: float | None = None  # how long its forward pass took, by the batcher's clock


class DynamicBatcher:
    def __init__(
        self,
        encoder: Encoder,
        *,
        max_batch_size: int = 32,
        max_batch_tokens: int = 0,
        batch_wait_ms: float = 5.0,
        max_queue: int = 2048,
        prep_threads: int = 2,
        batching: bool = True,
        pipeline_depth: int = 2,
        metrics: Metrics | None = None,
        early_cut: bool = False,
        pass_tokens: int = PASS_TOKENS,
        clock: Callable[[], float] = time.monotonic,
        prep_thread_setup: Callable[[], Any] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or prep_threads < 1 or pipeline_depth < 1:
            raise ValueError("max_batch_size, max_queue, prep_threads and pipeline_depth must be >= 1")
        if max_batch_tokens < 0:
            raise ValueError("max_batch_tokens must be >= 0 (0: no token limit)")
        if pass_tokens < 0:
            raise ValueError("pass_tokens must be >= 0")
        self.encoder = encoder
        self._prepare_early = batching and encoder.merges_prepared_images
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.pass_tokens = pass_tokens
        # a padded position's cost in a forward pass, as a share of a real token's (Encoder.padded_token_cost)
        self.padding_cost = min(1.0, max(0.0, float(getattr(encoder, "padded_token_cost", 1.0))))
        self.batch_wait = max(0.0, batch_wait_ms) / 1000.0
        self.max_queue = max_queue
        self.batching = batching
        self.pipeline_depth = pipeline_depth
        self.metrics = metrics
        self._clock = clock
        # the estimate behind the early cut; a gap is capped well above any wait it is asked about
        self._early = EarlyCut(ArrivalRate(max_gap=max(0.25, 4 * self.batch_wait))) if early_cut else None

        self._cond = threading.Condition()
        self._pending: dict[str, list[_Item]] = {TEXT: [], IMAGE: []}
        self._pending_count = 0
        self._pending_tokens = 0  # sum of the waiting texts' lengths (only kept with max_batch_tokens)
        self._in_pipeline = 0
        self._idle_since = 0.0  # when the model last ran out of work
        self._returning = 0  # requests answered by the last delivery (their callers may come back)
        self._arrived = 0  # requests that arrived since then
        self._closed = False
        self._seq = itertools.count()
        self._model_q: queue.Queue[_Batch | None] = queue.Queue()
        # ``prep_thread_setup`` runs in each preparation thread as it starts (the service's:
        # cpu_threads.torch_alone_in_this_thread, so that only the model thread keeps an OpenMP team)
        self._prep_pool = ThreadPoolExecutor(max_workers=prep_threads, thread_name_prefix="polyvec-prep",
                                             initializer=prep_thread_setup)
        self._scheduler = threading.Thread(target=self._schedule_loop, name="polyvec-batcher", daemon=True)
        self._model_thread = threading.Thread(target=self._model_loop, name="polyvec-model", daemon=True)
        self._scheduler.start()
        self._model_thread.start()

    # ------------------------------------------------------------------ API
    @property
    def queue_depth(self) -> int:
        """Items waiting to be cut into a batch."""
        return self._pending_count

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def early_cut(self) -> bool:
        """Whether a partial batch may go before its wait is over (:mod:`services.inference.arrivals`)."""
        return self._early is not None

    def check_room(self, n: int) -> None:
        """Raise :class:`QueueFull` now if ``n`` more items cannot be queued (a cheap early check)."""
        if self._pending_count + n > self.max_queue:
            raise QueueFull(
                f"queue full: {self._pending_count} items waiting, this request adds {n}, "
                f"limit is {self.max_queue}"
            )

    async def encode(
        self, texts: list[str], images: list[Image.Image], normalize: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for ``texts`` and ``images`` (float32, input order), normalised if ``normalize``.

        Raises :class:`QueueFull` at once when the queue cannot take all items,
        :class:`BatcherClosed` during shutdown, :class:`BatchFailed` when the
        batch holding one of the items failed.
        """
        loop = asyncio.get_running_loop()
        n = len(texts) + len(images)
        requests: dict[str, _Request] = {}
        if n:
            with self._cond:
                if self._closed:
                    raise BatcherClosed("the service is shutting down")
                if self._pending_count + n > self.max_queue:
                    raise QueueFull(
                        f"queue full: {self._pending_count} items waiting, this request adds {n}, "
                        f"limit is {self.max_queue}"
                    )
                now = self._clock()
                now_ns = time.time_ns()
                was_idle = self._pending_count == 0
                for modality, payloads in ((TEXT, texts), (IMAGE, images)):
                    if not payloads:
                        continue
                    req = _Request(modality, len(payloads), normalize, loop.create_future(), loop,
                                   remaining=len(payloads), enqueued_ns=now_ns)
                    requests[modality] = req
                    new = [_Item(req, pos, payload, next(self._seq), now)
                           for pos, payload in enumerate(payloads)]
                    if modality == TEXT and self.max_batch_tokens:
                        for it in new:
                            it.length = self._text_length(it.payload)
                            self._pending_tokens += it.length
                    self._pending[modality].extend(new)
                    if modality == IMAGE and self._prepare_early:
                        room = 2 * self.max_batch_size - (len(self._pending[IMAGE]) - len(new))
                        for it in new[:max(0, room)]:
                            it.early = self._prep_pool.submit(self.encoder.prepare_images, [it.payload])
                self._pending_count += n
                self._arrived += 1
                if self._early is not None:
                    self._early.observe_arrival(now, n)
                # Wake the scheduler only when this arrival can change its decision: it starts the
                # batch clock, fills a batch, is the last caller the scheduler waits for, or makes
                # an idle model's partial batch due (early cut). Other arrivals join the batch
                # being waited for without a thread switch each.
                if (was_idle or not self.batching or self._arrived == self._returning
                        or any(self._is_full(m) for m in requests)
                        or (self._early is not None and self._in_pipeline == 0
                            and self._due_modality(now)[0] is not None)):
                    self._cond.notify_all()
            self._report_depth()
        try:
            if requests:
                await asyncio.gather(*(r.future for r in requests.values()))
        except BaseException:
            for req in requests.values():
                self._abandon(req)
                if not req.future.done():
                    req.future.cancel()
                elif not req.future.cancelled():
                    req.future.exception()  # mark as retrieved: the first error is what we raise
            raise
        _trace_stages(requests.values())
        dims = self.encoder.dimensions

        def out(modality: str) -> np.ndarray:
            req = requests.get(modality)
            return req.future.result() if req else np.zeros((0, dims), dtype=np.float32)

        return out(TEXT), out(IMAGE)

    async def encode_texts(self, texts: list[str], normalize: bool) -> np.ndarray:
        return (await self.encode(texts, [], normalize))[0]

    async def encode_images(self, images: list[Image.Image], normalize: bool) -> np.ndarray:
        return (await self.encode([], images, normalize))[1]

    async def close(self, drain: bool = True) -> None:
        """Stop taking work; finish what is queued (``drain``) or fail it; stop the threads."""
        await asyncio.to_thread(self.close_sync, drain)

    def close_sync(self, drain: bool = True) -> None:
        with self._cond:
            self._closed = True
            if not drain:
                for items in self._pending.values():
                    for req in {id(it.request): it.request for it in items}.values():
                        self._fail(req, BatcherClosed("the service shut down before this request ran"))
                    items.clear()
                self._pending_count = 0
                self._pending_tokens = 0
            self._cond.notify_all()
        self._scheduler.join()
        self._model_thread.join()
        self._prep_pool.shutdown(wait=True)
        self._report_depth()

    # ------------------------------------------------------------ scheduling
    def _schedule_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed and self._pending_count == 0:
                        self._model_q.put(None)
                        return
                    if self._in_pipeline < self.pipeline_depth and self._pending_count:
                        # While the model is busy only a full batch is cut ahead (and prepared
                        # while the model runs); a partial one keeps growing until the model is
                        # free, so load turns into bigger batches instead of more small ones.
                        partial_ok = self._in_pipeline == 0
                        modality, timeout = self._due_modality(self._clock(), partial_ok)
                        if modality is not None:
                            break
                        self._cond.wait(timeout)
                    else:
                        self._cond.wait()
                items = self._cut(modality)
                self._in_pipeline += 1
            self._report_depth()
            batch = _Batch(modality, items)
            self._prep_pool.submit(self._prepare, batch)
            self._model_q.put(batch)

    def _due_modality(self, now: float, partial_ok: bool = True) -> tuple[str | None, float | None]:
        """The modality to cut now (the one whose oldest item is oldest), or how long to wait.

        With ``partial_ok`` False (the model is busy) only a full batch is due; the
        scheduler is woken again when the model finishes.
        """
        best: tuple[int, str] | None = None
        next_due: float | None = None
        for modality, items in self._pending.items():
            if not items:
                continue
            oldest = items[0]
            # The clock starts at the oldest item's arrival, or when the model last went idle if
            # that is later: callers whose results just came back get the same short window to
            # send their next item, so closed-loop clients keep filling whole batches.
            due_at = max(oldest.enqueued, self._idle_since) + self.batch_wait
            if self._arrived >= self._returning:
                # everyone the last answers could bring back is here already (a lone caller, or
                # all of a closed-loop crowd): waiting would only add latency
                due_at = oldest.enqueued
            full = self._is_full(modality)
            if (partial_ok and self._early is not None and self.batching and not full and now < due_at
                    and self._early.cut_now(modality, len(items), self._room(modality), due_at - now, now)):
                due_at = now  # the rest of the wait is not expected to pay for itself
            if full or (partial_ok and (not self.batching or self._closed or now >= due_at)):
                if best is None or oldest.seq < best[0]:
                    best = (oldest.seq, modality)
            elif partial_ok:
                next_due = due_at if next_due is None else min(next_due, due_at)
        if best is not None:
            return best[1], None
        return None, None if next_due is None else max(0.0, next_due - now)

    def _cut(self, modality: str) -> list[_Item]:
        """Remove and return the next batch of ``modality`` (called with the lock held)."""
        items = self._pending[modality]
        limit = self.max_batch_size
        budget = self.max_batch_tokens if modality == TEXT else 0
        if not self.batching:
            first = items[0].request
            chosen = [it for it in items if it.request is first][:limit]
        elif budget:
            chosen = self._cheapest_run(items, limit, budget, self.pass_tokens)
        elif len(items) <= limit:
            chosen = list(items)
        elif modality == TEXT:
            chosen = self._similar_lengths(items, limit)
        else:
            chosen = items[:limit]
        if len(chosen) == len(items):
            items.clear()
        else:
            taken = {id(it) for it in chosen}
            items[:] = [it for it in items if id(it) not in taken]
        self._pending_count -= len(chosen)
        if budget:
            self._pending_tokens -= sum(it.length or 0 for it in chosen)
        return chosen

    def _is_full(self, modality: str) -> bool:
        """A batch of ``modality`` cut now would be as big as a batch may be (called with the lock held)."""
        if len(self._pending[modality]) >= self.max_batch_size:
            return True
        budget = self.max_batch_tokens
        return modality == TEXT and bool(budget) and self._pending_tokens >= budget

    def _room(self, modality: str) -> int:
        """About how many more items a batch of ``modality`` could take (called with the lock held)."""
        items = self._pending[modality]
        room = self.max_batch_size - len(items)
        budget = self.max_batch_tokens
        if modality == TEXT and budget and items:
            mean = max(1.0, self._pending_tokens / len(items))
            room = min(room, int((budget - self._pending_tokens) / mean))
        return max(0, room)

    def _by_length(self, items: list[_Item]) -> tuple[list[_Item], int]:
        """The texts ordered by (length, arrival), each measured once, and the oldest one's position."""
        for it in items:
            if it.length is None:
                it.length = self._text_length(it.payload)
        ordered = sorted(items, key=lambda it: (it.length, it.seq))
        return ordered, ordered.index(items[0])

    def _similar_lengths(self, items: list[_Item], limit: int, budget: int = 0) -> list[_Item]:
        """A run of texts of similar length that includes the oldest one: ``limit`` texts at most and,
        with a ``budget``, at most ``budget`` tokens counted with padding (texts x the longest one);
        the longest such run, the one with the least spread of lengths among equals."""
        oldest = items[0]
        ordered, p = self._by_length(items)
        lengths = [it.length or 0 for it in ordered]
        best: tuple[int, int, int] | None = None  # (-size, spread, start)
        end = p
        # for each start s <= p, the run [s, end] grows while it fits; end never moves back
        for s in range(max(0, p - limit + 1), p + 1):
            end = max(end, p)
            while (end + 1 < len(ordered) and end + 2 - s <= limit
                   and (not budget or (end + 2 - s) * lengths[end + 1] <= budget)):
                end += 1
            size = end + 1 - s
            if budget and size > 1 and size * lengths[end] > budget:
                continue  # even the run ending at the oldest text is over the budget
            key = (-size, lengths[end] - lengths[s], s)
            if best is None or key < best:
                best = key
        if best is None:  # the oldest text alone is over the budget: it still runs, alone
            return [oldest]
        start, size = best[2], -best[0]
        return ordered[start:start + size]

    def _cheapest_run(self, items: list[_Item], limit: int, budget: int, pass_tokens: int) -> list[_Item]:
        """The run holding the oldest text in the cheapest split of the waiting texts into batches.

        The texts, ordered by (length, arrival), are split into consecutive runs of at most ``limit``
        texts and ``budget`` tokens (one text alone always fits); a run costs ``pass_tokens``
        plus its tokens, counted with padding (texts x the longest; with a ``padding_cost`` c below 1,
        c x that + (1 - c) x the texts' own lengths), and the split with the least total cost wins
        (on a tie, fewer passes). Only the texts near the oldest one in length order are considered
        (``_WINDOW`` batches either side), so a long queue costs a cut little time."""
        ordered, p = self._by_length(items)
        lo = max(0, p - _WINDOW * limit)
        ordered = ordered[lo:p + _WINDOW * limit]
        p -= lo
        lengths = [it.length or 0 for it in ordered]
        n = len(ordered)
        c = self.padding_cost
        prefix = list(itertools.accumulate(lengths, initial=0))
        inf = float("inf")
        # best[j]: (cost, passes) of the cheapest split of ordered[:j]; start[j]: where its last run starts
        best: list[tuple[float, int]] = [(0.0, 0)] + [(inf, 0)] * n
        start = [0] * (n + 1)
        for j in range(1, n + 1):
            longest = lengths[j - 1]
            for i in range(j - 1, max(-1, j - 1 - limit), -1):
                size = j - i
                tokens = c * size * longest + (1 - c) * (prefix[j] - prefix[i])
                if size > 1 and tokens > budget:
                    break  # longer runs ending here hold more tokens still
                cost, passes = best[i]
                cand = (cost + pass_tokens + tokens, passes + 1)
                if cand < best[j]:
                    best[j] = cand
                    start[j] = i
        j = n
        while start[j] > p:
            j = start[j]
        return ordered[start[j]:j]

    def _text_length(self, text: str) -> int:
        try:
            return int(self.encoder.text_length(text))
        except Exception:  # a length estimate must never fail a request
            return len(text)

    # ------------------------------------------------------- prep and model
    def _prepare(self, batch: _Batch) -> None:
        payloads = [it.payload for it in batch.items]
        started = time.time_ns()
        try:
            if batch.modality == TEXT:
                prepared = self.encoder.prepare_texts(payloads)
            elif any(it.early is not None for it in batch.items):
                prepared = self.encoder.merge_prepared_images([self._early_part(it) for it in batch.items])
            else:
                prepared = self.encoder.prepare_images(payloads)
        except BaseException as exc:
            batch.prepared.set_exception(exc)
        else:
            batch.prepare_ns = (started, time.time_ns())
            batch.prepared.set_result(prepared)

    def _early_part(self, item: _Item) -> Any:
        """One image's preparation: the one started at arrival (its result or its error), else done
        here. Waiting for it from a preparation thread is safe: the pool takes work in order, and an
        image's preparation was queued before the batch that holds it was cut, so it has started."""
        if item.early is not None:
            return item.early.result()
        return self.encoder.prepare_images([item.payload])

    def _model_loop(self) -> None:
        while True:
            batch = self._model_q.get()
            if batch is None:
                return
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._in_pipeline -= 1
                    if self._early is not None and batch.forward_s is not None:
                        self._early.observe_forward(batch.modality, len(batch.items), batch.forward_s)
                    if self._in_pipeline == 0:
                        self._idle_since = self._clock()
                    self._cond.notify_all()

    def _run(self, batch: _Batch) -> None:
        try:
            out = self._forward(batch.modality, batch.items, lambda: batch.prepared.result(), batch)
        except _StageError as exc:
            log.warning("%s batch of %d failed while %s: %s", batch.modality, len(batch.items), exc.stage,
                        exc.cause)
            if self.metrics is not None:
                self.metrics.observe_batch_failure(batch.modality)
            requests = list({id(it.request): it.request for it in batch.items}.values())
            if len(requests) == 1:
                self._abandon(requests[0], exc.as_batch_failed(batch.modality))
                return
            # Several callers shared the batch: run each caller's items on their own so one
            # bad request (say, an image the model cannot take) fails only itself.
            for req in requests:
                own = [it for it in batch.items if it.request is req]
                if req.done:
                    continue
                try:
                    out = self._forward(
                        batch.modality, own, lambda own=own: self._prepare_now(batch.modality, own)
                    )
                except _StageError as exc2:
                    self._abandon(req, exc2.as_batch_failed(batch.modality))
                    continue
                self._deliver(own, out)
            return
        self._deliver(batch.items, out)

    def _prepare_now(self, modality: str, items: list[_Item]) -> Any:
        payloads = [it.payload for it in items]
        if modality == TEXT:
            return self.encoder.prepare_texts(payloads)
        return self.encoder.prepare_images(payloads)

    def _forward(self, modality: str, items: list[_Item], get_prepared,
                 batch: _Batch | None = None) -> np.ndarray:
        """Prepared input -> float32 vectors for ``items``; failures raised as :class:`_StageError`."""
        stage = "preparing"
        try:
            waited = time.time_ns()
            prepared = get_prepared()
            ready = time.time_ns()
            stage = "running"
            start, clock_start = time.perf_counter(), self._clock()
            if modality == TEXT:
                out = self.encoder.forward_texts(prepared)
            else:
                out = self.encoder.forward_images(prepared)
            elapsed = time.perf_counter() - start
            if batch is not None:
                batch.forward_s = self._clock() - clock_start
            if isinstance(out, list):  # a sparse encoder: one SparseVector per item
                if len(out) != len(items):
                    raise RuntimeError(f"model returned {len(out)} vectors for a batch of {len(items)} items")
            else:
                out = np.asarray(out, dtype=np.float32)
                if out.ndim != 2 or out.shape[0] != len(items):
                    raise RuntimeError(
                        f"model returned shape {tuple(out.shape)} for a batch of {len(items)} items"
                    )
        except Exception as exc:
            raise _StageError(stage, exc) from exc
        if self.metrics is not None:
            self.metrics.observe_batch(modality, len(items), elapsed)
        prepared_at = batch.prepare_ns if batch is not None and batch.prepare_ns else (waited, ready)
        timing = (*prepared_at, ready, time.time_ns(), len(items))
        for req in {id(it.request): it.request for it in items}.values():
            req.batches.append(timing)
        return out

    def _deliver(self, items: list[_Item], out: np.ndarray | list) -> None:
        finished: list[_Request] = []
        for row, item in enumerate(items):
            req = item.request
            if req.done:
                continue
            if req.result is None:
                req.result = [None] * req.count if isinstance(out, list) \
                    else np.empty((req.count, out.shape[1]), dtype=np.float32)
            req.result[item.pos] = out[row]
            req.remaining -= 1
            if req.remaining == 0:
                req.done = True
                finished.append(req)
        with self._cond:
            # the callers answered now may send their next request: see _due_modality
            self._returning = len(finished)
            self._arrived = 0
        # one wake-up per event loop for the whole batch, not one per request
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, np.ndarray | list]]] = {}
        for req in finished:
            assert req.result is not None  # every finished request has its vectors
            vectors = l2_normalize(req.result) if req.normalize and isinstance(req.result, np.ndarray) \
                else req.result
            by_loop.setdefault(req.loop, []).append((req.future, vectors))
        for loop, results in by_loop.items():
            _call_in_loop(loop, _resolve_all, results)

    # ---------------------------------------------------------- bookkeeping
    def _abandon(self, req: _Request, error: BaseException | None = None) -> None:
        """Drop a request's waiting items; fail its future with ``error`` (if given and not done)."""
        with self._cond:
            if error is not None:
                self._fail(req, error)
            req.done = True
            items = self._pending[req.modality]
            kept = [it for it in items if it.request is not req]
            if len(kept) != len(items):
                self._pending_count -= len(items) - len(kept)
                if req.modality == TEXT and self.max_batch_tokens:
                    self._pending_tokens -= sum(it.length or 0 for it in items if it.request is req)
                items[:] = kept
        self._report_depth()

    def _fail(self, req: _Request, error: BaseException) -> None:
        if not req.done:
            req.done = True
            _call_in_loop(req.loop, _reject, req.future, error)

    def _report_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.set_queue_depth(self._pending_count)


class _StageError(Exception):
    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage}: {cause}")
        self.stage = stage
        self.cause = cause

    def as_batch_failed(self, modality: str) -> BatchFailed:
        return BatchFailed(
            f"{self.stage} the {modality} batch failed: {type(self.cause).__name__}: {self.cause}"
        )


def _trace_stages(requests: Iterable[_Request]) -> None:
    """Spans of the batcher's stages for each request, under the caller's current span (when it is
    recorded): the wait in the queue, then per batch that held its items the preparation (tokenising,
    image preprocessing) and the forward pass, each with the batch's size."""
    if not trace.get_current_span().is_recording():
        return
    tracer = tracing.tracer()
    for req in requests:
        if not req.batches:
            continue
        first = min(b[0] for b in req.batches)
        attributes: dict[str, str | int] = {"polyvec.modality": req.modality, "polyvec.items": req.count}
        tracer.start_span("inference.queue_wait", start_time=req.enqueued_ns,
                          attributes=attributes).end(end_time=max(first, req.enqueued_ns))
        for prep_start, prep_end, fwd_start, fwd_end, size in req.batches:
            stage: dict[str, str | int] = {"polyvec.modality": req.modality, "polyvec.batch_size": size}
            for name, start, end in (("inference.batch", prep_start, prep_end),
                                     ("inference.forward", fwd_start, fwd_end)):
                tracer.start_span(name, start_time=start, attributes=stage).end(end_time=end)


def _resolve(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _resolve_all(results: list[tuple[asyncio.Future, Any]]) -> None:
    for future, value in results:
        if not future.done():
            future.set_result(value)


def _reject(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _call_in_loop(loop: asyncio.AbstractEventLoop, fn, *args) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the caller's loop is gone: nobody is waiting
        pass
