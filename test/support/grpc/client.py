#!/usr/bin/python3
"""A real gRPC client for kubegate's tests: runs one scenario against server.py's `kubegate.test.Echo`, directly or
through the gateway, on ONE channel (one HTTP/2 connection, as a gRPC client keeps), and prints one JSON line.

  usage: client.py HOST:PORT SCENARIO_JSON

Scenario kinds (their fields and results are typed in peers.ts): unary, server_stream, client_stream, bidi,
deadline, cancel, fail, big, concurrent, metadata. Every scenario may set "metadata" (sent with each call; "-bin"
values in base64) and "deadlineMs" (each call's deadline, sent as grpc-timeout). A call that ends with an error is
reported as its status: {"code": "UNAVAILABLE", "details": "...", "reason": x-kubegate-reason from the trailing or
initial metadata}.
"""
import asyncio
import base64
import json
import sys
import time
from typing import Any, Optional

import grpc
import grpc.aio

SERVICE = "/kubegate.test.Echo/"
MAX_MESSAGE = 64 * 1024 * 1024
MIB = 1024 * 1024
_PATTERN_UNIT = b"0123456789abcdef"


def pattern(n: int) -> bytes:
    """`n` bytes of padding, the same as server.py's."""
    return (_PATTERN_UNIT * (n // len(_PATTERN_UNIT) + 1))[:n]


def metadata_dict(md: Optional[Any]) -> dict:
    """Metadata as a JSON object (binary values base64; a repeated key keeps its last value)."""
    return {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in (md or ())}


async def status_of(call: Any, error: Optional[BaseException] = None) -> dict:
    """The status of a finished call as {code, details, reason?}."""
    if isinstance(error, grpc.aio.AioRpcError):
        code, details = error.code(), error.details()
        trailing, initial = error.trailing_metadata(), error.initial_metadata()
    else:
        code, details = await call.code(), await call.details()
        trailing, initial = await call.trailing_metadata(), await call.initial_metadata()
    status = {"code": code.name, "details": details or ""}
    reason = metadata_dict(trailing).get("x-kubegate-reason") or metadata_dict(initial).get("x-kubegate-reason")
    if reason:
        status["reason"] = reason
    return status


def server_of(reply: bytes) -> str:
    """The name a reply starts with (`<name>:`)."""
    return reply.split(b":", 1)[0].decode(errors="replace")


class Runner:
    def __init__(self, channel: grpc.aio.Channel, scenario: dict) -> None:
        self.channel = channel
        self.s = scenario
        self.methods: dict[str, Any] = {}
        # Binary ("-bin") values are given base64, as they are reported.
        self.md = tuple((k, base64.b64decode(v) if k.endswith("-bin") else v) for k, v in scenario.get("metadata", {}).items())
        deadline = scenario.get("deadlineMs")
        self.timeout = None if deadline is None else deadline / 1000

    def method(self, kind: str, name: str):
        """The channel's callable for `name`, made once (bytes in and out: no serializers)."""
        if name not in self.methods:
            self.methods[name] = getattr(self.channel, kind)(SERVICE + name)
        return self.methods[name]

    async def unary_call(self, name: str, request: bytes, timeout: Optional[float] = None):
        """(reply, None) or (None, status)."""
        call = self.method("unary_unary", name)(request, metadata=self.md, timeout=timeout or self.timeout)
        try:
            return await call, None
        except grpc.aio.AioRpcError as e:
            return None, await status_of(call, e)

    async def unary(self) -> dict:
        count, interval = self.s["count"], self.s.get("intervalMs", 0) / 1000
        payload = self.s.get("payload", "ping").encode()
        by_server: dict[str, int] = {}
        errors, timeline = [], []
        start = time.monotonic()
        for i in range(count):
            if i and interval:
                await asyncio.sleep(interval)
            at = round((time.monotonic() - start) * 1000)
            reply, status = await self.unary_call("Unary", payload)
            if status:
                errors.append(status)
                timeline.append({"atMs": at, "code": status["code"]})
                continue
            server = server_of(reply)
            if reply[len(server) + 1 :] != payload:
                errors.append({"code": "OK", "details": f"reply does not echo the request: {reply[:80]!r}"})
            by_server[server] = by_server.get(server, 0) + 1
            timeline.append({"atMs": at, "server": server})
        elapsed = time.monotonic() - start
        result = {
            "ok": sum(by_server.values()),
            "byServer": by_server,
            "errors": errors,
            "elapsedMs": round(elapsed * 1000),
            "callsPerSecond": round(count / max(elapsed, 1e-6)),
        }
        if self.s.get("timeline"):
            result["timeline"] = timeline
        return result

    async def server_stream(self) -> dict:
        size = self.s.get("size", 0)
        request = json.dumps({"count": self.s["count"], "size": size, "intervalMs": self.s.get("intervalMs", 0)}).encode()
        call = self.method("unary_stream", "ServerStream")(request, metadata=self.md, timeout=self.timeout)
        messages = total = 0
        servers, intact = set(), True
        pad = pattern(size)
        try:
            async for reply in call:
                server = server_of(reply)
                servers.add(server)
                intact = intact and reply == f"{server}:{messages}:".encode() + pad
                messages += 1
                total += len(reply)
            status = await status_of(call)
        except grpc.aio.AioRpcError as e:
            status = await status_of(call, e)
        return {"messages": messages, "bytes": total, "servers": sorted(servers), "intact": intact, "status": status}

    async def client_stream(self) -> dict:
        count, size = self.s["count"], self.s.get("size", 16)
        chunk = pattern(size)

        async def requests():
            for _ in range(count):
                yield chunk

        reply, status = None, None
        call = self.method("stream_unary", "ClientStream")(requests(), metadata=self.md, timeout=self.timeout)
        try:
            reply = json.loads(await call)
            status = await status_of(call)
        except grpc.aio.AioRpcError as e:
            status = await status_of(call, e)
        return {"sent": count, "sentBytes": count * size, "reply": reply, "status": status}

    async def bidi(self) -> dict:
        count = self.s["count"]
        call = self.method("stream_stream", "BidiStream")(metadata=self.md, timeout=self.timeout)
        received, servers, in_order = 0, set(), True
        try:
            # Ping-pong: each message waits for its echo, so the stream is interactive both ways.
            for i in range(count):
                message = f"m{i}".encode()
                await call.write(message)
                reply = await call.read()
                if reply is grpc.aio.EOF:
                    break
                server = server_of(reply)
                servers.add(server)
                in_order = in_order and reply == server.encode() + b":" + message
                received += 1
            await call.done_writing()
            status = await status_of(call)
        except grpc.aio.AioRpcError as e:
            status = await status_of(call, e)
        return {"sent": count, "received": received, "servers": sorted(servers), "inOrder": in_order, "status": status}

    async def deadline(self) -> dict:
        start = time.monotonic()
        reply, status = await self.unary_call("Sleep", json.dumps({"ms": self.s["sleepMs"]}).encode())
        elapsed = round((time.monotonic() - start) * 1000)
        return {"status": status or {"code": "OK", "details": ""}, "reply": json.loads(reply) if reply else None, "elapsedMs": elapsed}

    async def cancel(self) -> dict:
        start = time.monotonic()
        call = self.method("unary_unary", "Sleep")(json.dumps({"ms": self.s["sleepMs"]}).encode(), metadata=self.md, timeout=self.timeout)
        await asyncio.sleep(self.s["afterMs"] / 1000)
        cancelled = call.cancel()
        try:
            await call
            status = await status_of(call)
        except asyncio.CancelledError:
            status = {"code": (await call.code()).name, "details": await call.details() or ""}
        except grpc.aio.AioRpcError as e:
            status = await status_of(call, e)
        return {"cancelled": cancelled, "status": status, "elapsedMs": round((time.monotonic() - start) * 1000)}

    async def fail(self) -> dict:
        request = {"code": self.s["code"], "message": self.s.get("message", ""), "trailers": self.s.get("trailers", {})}
        call = self.method("unary_unary", "Fail")(json.dumps(request).encode(), metadata=self.md, timeout=self.timeout)
        try:
            await call
            status = await status_of(call)
            initial, trailing = await call.initial_metadata(), await call.trailing_metadata()
        except grpc.aio.AioRpcError as e:
            status = await status_of(call, e)
            initial, trailing = e.initial_metadata(), e.trailing_metadata()
        return {"status": status, "initial": metadata_dict(initial), "trailing": metadata_dict(trailing)}

    async def big(self) -> dict:
        reply_bytes = round(self.s.get("replyMiB", 0) * MIB)
        request_bytes = round(self.s.get("requestMiB", 0) * MIB)
        start = time.monotonic()
        reply, status = await self.unary_call("Big", json.dumps({"size": reply_bytes}).encode() + b"\n" + pattern(request_bytes))
        result = {"status": status or {"code": "OK", "details": ""}, "elapsedMs": round((time.monotonic() - start) * 1000)}
        if reply is not None:
            nl = reply.index(b"\n")
            head = json.loads(reply[:nl])
            body = reply[nl + 1 :]
            result.update(
                server=head["name"],
                replyBytes=len(reply),
                replyIntact=body == pattern(len(body)),
                requestBytes=request_bytes,
                requestReceived=head["received"],
                requestIntact=head["intact"],
            )
        return result

    async def concurrent(self) -> dict:
        calls, sleep_ms = self.s["calls"], self.s.get("sleepMs", 100)
        request = json.dumps({"ms": sleep_ms}).encode()
        start = time.monotonic()
        outcomes = await asyncio.gather(*(self.unary_call("Sleep", request) for _ in range(calls)))
        by_server: dict[str, int] = {}
        errors = []
        for reply, status in outcomes:
            if status:
                errors.append(status)
            else:
                server = json.loads(reply)["name"]
                by_server[server] = by_server.get(server, 0) + 1
        return {"ok": sum(by_server.values()), "byServer": by_server, "errors": errors, "elapsedMs": round((time.monotonic() - start) * 1000)}

    async def metadata(self) -> dict:
        call = self.method("unary_unary", "Metadata")(b"", metadata=self.md, timeout=self.timeout)
        try:
            reply = json.loads(await call)
            status = await status_of(call)
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as e:
            reply, status, trailing = None, await status_of(call, e), e.trailing_metadata()
        seen = {k: v for k, v in reply["metadata"]} if reply else {}
        return {"server": reply["name"] if reply else None, "seen": seen, "trailing": metadata_dict(trailing), "status": status}


KINDS = {"unary", "server_stream", "client_stream", "bidi", "deadline", "cancel", "fail", "big", "concurrent", "metadata"}


async def run(target: str, scenario: dict) -> dict:
    kind = scenario["kind"]
    if kind not in KINDS:
        raise ValueError(f'Unknown scenario kind "{kind}"')
    options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        result = await getattr(Runner(channel, scenario), kind)()
    return {"kind": kind, **result}


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} HOST:PORT SCENARIO_JSON")
    print(json.dumps(asyncio.run(run(sys.argv[1], json.loads(sys.argv[2])))), flush=True)


if __name__ == "__main__":
    main()
