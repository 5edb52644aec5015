/**
 * An HTTP/2 cleartext origin on kubegate's own session (src/proxy/h2/session.ts, server role), not a test: answers
 * every request, once it has ended, with 200 and a 2-byte "ok" (as the HTTP/1.1 backends answer `GET /`), on
 * 127.0.0.1:PORT until killed. Clients speak HTTP/2 with prior knowledge (h2load, curl --http2-prior-knowledge).
 *
 *   bun test/bench/backends/h2c-backend.ts PORT
 */
import { H2Session, type H2Stream, type H2StreamHandlers, type HeaderList } from "../../../src/proxy/h2/session.ts";
import { rt } from "../../../src/runtime/index.ts";
import type { TcpSocket } from "../../../src/runtime/types.ts";

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 1 || port > 65_535) {
  console.error(`Usage: bun test/bench/backends/h2c-backend.ts PORT (got "${process.argv[2] ?? ""}")`);
  process.exit(2);
}

// Shared by every response: the session never writes to a chunk it was given.
const HEAD: HeaderList = [
  [":status", "200"],
  ["content-type", "text/plain"],
  ["content-length", "2"],
];
const BODY = new TextEncoder().encode("ok");

function answer(stream: H2Stream): void {
  stream.sendHeaders(HEAD, false);
  stream.sendData(BODY, true);
}

/** A request with a body: consume it, answer at its end (after trailers too). */
const withBody: H2StreamHandlers = {
  headers(stream, _headers, endStream) {
    if (endStream) answer(stream);
  },
  data(stream, chunk, endStream) {
    stream.consumed(chunk.length);
    if (endStream) answer(stream);
  },
  reset() {},
};

const events = {
  stream(stream: H2Stream, _headers: HeaderList, endStream: boolean) {
    if (endStream) answer(stream);
    else stream.handlers = withBody;
  },
};

rt.listenTcp<H2Session | null>({
  hostname: "127.0.0.1",
  port,
  handlers: {
    open: (s) => (s.data = new H2Session(s as TcpSocket<unknown>, "server", {}, events)),
    data: (s, chunk) => s.data?.receive(chunk),
    drain: (s) => s.data?.socketDrained(),
    end: (s) => s.data?.close(),
    close: (s) => s.data?.close(),
  },
});
console.log(`h2c backend listening on 127.0.0.1:${port}`);
