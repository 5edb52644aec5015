#!/usr/bin/python3
"""A real gRPC upstream for kubegate's tests: Debian's python3-grpcio (asyncio server), no generated code.

Serves service `kubegate.test.Echo` over cleartext HTTP/2 (h2c) with generic handlers and bytes in and out.
Control parameters travel as JSON request bytes; every reply carries the server's --name so a test can tell
endpoints apart (names must not contain ":").

  Unary         request bytes -> b"<name>:" + request bytes
  ServerStream  {"count": N, "size"?: bytes, "intervalMs"?: ms} -> N replies b"<name>:<i>:" + `size` pattern bytes
  ClientStream  any messages -> {"name", "count", "bytes"}
  BidiStream    each message -> b"<name>:" + message
  Sleep         {"ms": N} -> {"name", "sleptMs", "deadlineMs"} (deadlineMs: time left when the call began, or null);
                a cancel or deadline ends the sleep and is counted
  Fail          {"code": "UNAVAILABLE", "message"?, "trailers"?: {k: v}} -> that status, with the trailers and
                x-server-name in the trailing metadata
  Big           b'{"size": N}\\n' + request padding -> b'{"name", "received", "intact"}\\n' + padding, N bytes in
                all; "intact" says whether the request padding arrived as sent (the pattern of `pattern`)
  Metadata      anything -> {"name", "metadata": [[key, value], ...]} (binary values base64), and the request's
                metadata echoed back as trailing metadata (keys gRPC reserves left out)

Prints {"port": N} once listening. Each line on stdin ("stats") is answered with one line {"stats": {...}} on
stdout (see `Stats.snapshot`); EOF on a stdin pipe stops the server, so it never outlives its parent. SIGTERM
stops it with --grace-ms for calls in flight (GOAWAY first, as a terminating pod's server does).
"""
import argparse
import asyncio
import base64
import json
import os
import signal
import stat
import sys
import threading
from typing import AsyncIterator, Callable, Optional

import grpc
import grpc.aio

SERVICE = "kubegate.test.Echo"
MAX_MESSAGE = 64 * 1024 * 1024
_PATTERN_UNIT = b"0123456789abcdef"
# Metadata gRPC manages itself: echoing it back as trailing metadata is refused or meaningless.
_RESERVED = {"user-agent", "te", "content-type", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"}


def pattern(n: int) -> bytes:
    """`n` bytes of the padding both peers send and check: 0123456789abcdef repeated."""
    return (_PATTERN_UNIT * (n // len(_PATTERN_UNIT) + 1))[:n]


class Stats:
    """What the server saw. A call counts as cancelled when the peer's RST_STREAM or its deadline interrupted the
    handler (grpc.aio cancels the handler's task; `context.cancelled()` stays False there in 1.51); of those,
    `deadlines` are the ones whose deadline had passed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.by_method: dict[str, int] = {}
        self.ok = 0
        self.failed = 0
        self.cancelled = 0
        self.cancelled_by_method: dict[str, int] = {}
        self.deadlines = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.peers: set[str] = set()

    def begin(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self.calls += 1
        self.by_method[method] = self.by_method.get(method, 0) + 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.peers.add(context.peer())

    def end(self, method: str, context: grpc.aio.ServicerContext, error: Optional[BaseException]) -> None:
        self.in_flight -= 1
        if error is None:
            self.ok += 1
        elif isinstance(error, asyncio.CancelledError):
            self.cancelled += 1
            self.cancelled_by_method[method] = self.cancelled_by_method.get(method, 0) + 1
            left = context.time_remaining()
            if left is not None and left <= 0:
                self.deadlines += 1
        else:
            self.failed += 1

    def snapshot(self) -> dict:
        return {
            "name": self.name,
            "calls": self.calls,
            "byMethod": self.by_method,
            "ok": self.ok,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "cancelledByMethod": self.cancelled_by_method,
            "deadlines": self.deadlines,
            "inFlight": self.in_flight,
            "maxInFlight": self.max_in_flight,
            "connections": len(self.peers),
        }


def handlers(name: str, stats: Stats) -> grpc.GenericRpcHandler:
    prefix = name.encode() + b":"

    def counted(method: str, fn: Callable) -> Callable:
        if asyncio.iscoroutinefunction(fn):

            async def call(request, context):
                stats.begin(method, context)
                try:
                    reply = await fn(request, context)
                except BaseException as e:
                    stats.end(method, context, e)
                    raise
                stats.end(method, context, None)
                return reply

            return call

        async def stream(request, context):
            stats.begin(method, context)
            try:
                async for reply in fn(request, context):
                    yield reply
            except BaseException as e:
                stats.end(method, context, e)
                raise
            stats.end(method, context, None)

        return stream

    async def unary(request: bytes, context) -> bytes:
        return prefix + request

    async def server_stream(request: bytes, context) -> AsyncIterator[bytes]:
        p = json.loads(request)
        pad = pattern(p.get("size", 0))
        interval = p.get("intervalMs", 0) / 1000
        for i in range(p["count"]):
            if i and interval:
                await asyncio.sleep(interval)
            yield prefix + str(i).encode() + b":" + pad

    async def client_stream(requests: AsyncIterator[bytes], context) -> bytes:
        count = total = 0
        async for m in requests:
            count += 1
            total += len(m)
        return json.dumps({"name": name, "count": count, "bytes": total}).encode()

    async def bidi(requests: AsyncIterator[bytes], context) -> AsyncIterator[bytes]:
        async for m in requests:
            yield prefix + m

    async def sleep(request: bytes, context) -> bytes:
        left = context.time_remaining()
        ms = json.loads(request)["ms"]
        await asyncio.sleep(ms / 1000)
        deadline = None if left is None else round(left * 1000)
        return json.dumps({"name": name, "sleptMs": ms, "deadlineMs": deadline}).encode()

    async def fail(request: bytes, context) -> bytes:
        p = json.loads(request)
        status = grpc.StatusCode[p["code"]]
        trailers = tuple((k, v) for k, v in p.get("trailers", {}).items()) + (("x-server-name", name),)
        await context.abort(status, p.get("message", ""), trailers)

    async def big(request: bytes, context) -> bytes:
        nl = request.index(b"\n")
        size = json.loads(request[:nl])["size"]
        padding = request[nl + 1 :]
        head = json.dumps({"name": name, "received": len(padding), "intact": padding == pattern(len(padding))}).encode() + b"\n"
        return head + pattern(max(0, size - len(head)))

    async def metadata(request: bytes, context) -> bytes:
        seen = [(k, base64.b64encode(v).decode() if isinstance(v, bytes) else v) for k, v in context.invocation_metadata()]
        context.set_trailing_metadata(tuple((k, v) for k, v in context.invocation_metadata() if k not in _RESERVED and not k.startswith(":")))
        return json.dumps({"name": name, "metadata": seen}).encode()

    methods = {
        "Unary": grpc.unary_unary_rpc_method_handler(counted("Unary", unary)),
        "ServerStream": grpc.unary_stream_rpc_method_handler(counted("ServerStream", server_stream)),
        "ClientStream": grpc.stream_unary_rpc_method_handler(counted("ClientStream", client_stream)),
        "BidiStream": grpc.stream_stream_rpc_method_handler(counted("BidiStream", bidi)),
        "Sleep": grpc.unary_unary_rpc_method_handler(counted("Sleep", sleep)),
        "Fail": grpc.unary_unary_rpc_method_handler(counted("Fail", fail)),
        "Big": grpc.unary_unary_rpc_method_handler(counted("Big", big)),
        "Metadata": grpc.unary_unary_rpc_method_handler(counted("Metadata", metadata)),
    }
    return grpc.method_handlers_generic_handler(SERVICE, methods)


async def serve(args: argparse.Namespace) -> None:
    # No SO_REUSEPORT (gRPC's default): a second server must not share a port in use, it must fail to bind.
    options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.so_reuseport", 0)]
    if args.max_concurrent_streams is not None:
        options.append(("grpc.max_concurrent_streams", args.max_concurrent_streams))
    stats = Stats(args.name)
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((handlers(args.name, stats),))
    host = f"[{args.host}]" if ":" in args.host else args.host
    port = server.add_insecure_port(f"{host}:{args.port}")
    await server.start()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    try:
        print(json.dumps({"port": port}), flush=True)

        def print_stats() -> None:
            print(json.dumps({"stats": stats.snapshot()}), flush=True)

        def read_stdin() -> None:
            while data := os.read(0, 4096):
                for _ in range(data.count(b"\n")):
                    loop.call_soon_threadsafe(print_stats)
            if stat.S_ISFIFO(os.fstat(0).st_mode):
                loop.call_soon_threadsafe(done.set)

        threading.Thread(target=read_stdin, daemon=True).start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
    finally:
        # Always stop here: a server left to the interpreter's exit spins forever after the loop has closed.
        await server.stop(args.grace_ms / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="appears in every reply (no ':')")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-concurrent-streams", type=int, help="SETTINGS_MAX_CONCURRENT_STREAMS we advertise")
    parser.add_argument("--grace-ms", type=int, default=0, help="on SIGTERM, time calls in flight get to finish")
    args = parser.parse_args()
    if ":" in args.name:
        parser.error("--name must not contain ':'")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
