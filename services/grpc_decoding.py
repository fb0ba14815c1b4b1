"""Bytes that are not a valid request message answer INVALID_ARGUMENT, on every method of a grpc.aio server.

grpc decodes a request with the handler's ``request_deserializer`` before the servicer runs; a
``DecodeError`` there would surface as ``UNKNOWN "Unexpected <class 'DecodeError'>"`` with a traceback
in the log. :class:`RejectUndecodable` (a server interceptor, so it covers every service and method on
the server, including ones added later) wraps each handler: its deserializer turns a failure into a
marker instead of raising, and its behaviour aborts with INVALID_ARGUMENT naming the message type when
it receives that marker. Nothing is logged: a malformed request is the caller's mistake.

A synchronous unary-request behaviour runs on the event loop, as grpc.aio runs it without a migration
thread pool; a synchronous streaming-request behaviour is left as it is.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

_CACHE_LIMIT = 1024

class _Undecodable:
    """Stands in for a request message whose bytes did not decode."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _message_name(deserializer: Callable[[bytes], Any]) -> str:
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", None) or "request message"


def _safe(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    name = _message_name(deserializer)

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, and anything else a deserializer raises on bad bytes
            detail = str(exc) or type(exc).__name__
            return _Undecodable(f"request: the bytes are not a valid {name} ({detail})")

    return decode


async def _refuse_if_undecodable(request: Any, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, _Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)


async def _checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    async for request in requests:
        await _refuse_if_undecodable(request, context)
        yield request


async def _call(behaviour: Callable[..., Any], *args: Any) -> Any:
    result = behaviour(*args)
    return await result if inspect.isawaitable(result) else result


async def _stream(result: Any) -> AsyncIterator[Any]:
    """Yield what a streaming behaviour produced: an async generator, a plain iterator, or nothing
    (a coroutine that wrote its responses with ``context.write``)."""
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        await result
    elif result is not None:
        for item in result:
            yield item


def _wrap(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    if handler.request_deserializer is None:
        return handler
    changes: dict[str, Any] = {"request_deserializer": _safe(handler.request_deserializer)}
    if handler.unary_unary is not None:
        unary_unary = handler.unary_unary

        async def uu(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await _refuse_if_undecodable(request, context)
            return await _call(unary_unary, request, context)

        changes["unary_unary"] = uu
    elif handler.unary_stream is not None:
        unary_stream = handler.unary_stream

        async def us(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await _refuse_if_undecodable(request, context)
            async for item in _stream(unary_stream(request, context)):
                yield item

        changes["unary_stream"] = us
    elif not (inspect.iscoroutinefunction(handler.stream_unary)
              or inspect.isasyncgenfunction(handler.stream_stream)):
        return handler  # a synchronous streaming-request behaviour reads a plain iterator: left alone
    elif handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        async def su(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            return await stream_unary(_checked(requests, context), context)

        changes["stream_unary"] = su
    else:
        stream_stream = handler.stream_stream

        async def ss(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for item in _stream(stream_stream(_checked(requests, context), context)):
                yield item

        changes["stream_stream"] = ss
    return handler._replace(**changes)  # grpc's handlers are namedtuples


class RejectUndecodable(grpc.aio.ServerInterceptor):
    """Server interceptor: undecodable request bytes -> INVALID_ARGUMENT, no traceback."""

    def __init__(self) -> None:
        self._wrapped: dict[int, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        known = self._wrapped.get(id(handler))
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = _wrap(handler) if hasattr(handler, "_replace") else handler
        if len(self._wrapped) >= _CACHE_LIMIT:  # handlers made afresh per call would otherwise pile up
            self._wrapped.clear()
        self._wrapped[id(handler)] = (handler, wrapped)  # keeps ``handler`` alive, so its id stays unique
        return wrapped
