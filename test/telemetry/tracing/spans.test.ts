/**
 * Spans of the HTTP and TCP data planes, asserted through an in-memory exporter: SERVER and CLIENT
 * spans with their parent links and attributes, retries as separate CLIENT spans, ERROR on 502, the
 * W3C trace context written upstream, and no spans (the client's traceparent untouched) at ratio 0.
 */
import { describe, expect, test } from "bun:test";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { RoundRobin } from "../../../src/balancer/round-robin.ts";
import type { Endpoint } from "../../../src/model/types.ts";
import { makeTcpProxyFactory } from "../../../src/proxy/tcp/index.ts";
import { defaultProxyOptions } from "../../../src/proxy/types.ts";
import { rt } from "../../../src/runtime/index.ts";
import { setupTracing } from "../../../src/telemetry/tracing/setup.ts";
import { endpoint, header, RawUpstream, route, startProxy, waitFor } from "../../support/http-harness.ts";
import { REFUSED_PORT } from "../../support/ports.ts";

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID = "00f067aa0ba902b7";

function inMemory(sampleRatio: number) {
  const exporter = new InMemorySpanExporter();
  const tracing = setupTracing({ exporter, simpleProcessor: true, sampleRatio })!;
  return { exporter, tracing, [Symbol.asyncDispose]: () => tracing.shutdown() };
}

/** A port that refuses connections (see REFUSED_PORT). */
const deadPort = () => REFUSED_PORT;

function podEndpoint(port: number, pod: string): Endpoint {
  return { ...endpoint(port), targetRef: { kind: "Pod", name: pod, namespace: "default" } };
}

const byKind = (spans: readonly ReadableSpan[], kind: SpanKind) => spans.filter((s) => s.kind === kind);

describe("HTTP spans", () => {
  test("a SERVER span per request, its CLIENT span as child, the incoming traceparent as parent, the CLIENT span id upstream", async () => {
    await using t = inMemory(1);
    await using up = new RawUpstream("a");
    await using proxy = startProxy([podEndpoint(up.port, "web-7f9c")], { telemetry: { tracing: t.tracing.proxy } });
    const res = await fetch(`${proxy.url}/items/42?q=1`, { headers: { traceparent: `00-${TRACE_ID}-${PARENT_ID}-01`, tracestate: "vendor=abc" } });
    expect(res.status).toBe(200);
    await res.text();
    await waitFor(() => t.exporter.getFinishedSpans().length === 2, "two spans");

    const spans = t.exporter.getFinishedSpans();
    const [server] = byKind(spans, SpanKind.SERVER);
    const [client] = byKind(spans, SpanKind.CLIENT);
    expect(server!.spanContext().traceId).toBe(TRACE_ID);
    expect(server!.parentSpanContext?.spanId).toBe(PARENT_ID);
    expect(client!.spanContext().traceId).toBe(TRACE_ID);
    expect(client!.parentSpanContext?.spanId).toBe(server!.spanContext().spanId);
    expect(server!.attributes).toMatchObject({
      "http.request.method": "GET",
      "url.path": "/items/42",
      "http.response.status_code": 200,
      "server.address": "127.0.0.1",
      "server.port": proxy.port,
      "client.address": "127.0.0.1",
      "network.peer.address": "127.0.0.1",
      "k8s.namespace.name": "default",
      "k8s.service.name": "web",
    });
    expect(client!.attributes).toMatchObject({
      "http.request.method": "GET",
      "http.response.status_code": 200,
      "network.peer.address": "127.0.0.1",
      "network.peer.port": up.port,
      "k8s.namespace.name": "default",
      "k8s.service.name": "web",
      "k8s.pod.name": "web-7f9c",
      "kubegate.endpoint.access": "direct",
    });
    expect(server!.status.code).toBe(SpanStatusCode.UNSET);

    const received = up.requests[0]!;
    expect(received.headers.filter(([n]) => n.toLowerCase() === "traceparent")).toHaveLength(1);
    expect(header(received, "traceparent")).toBe(`00-${TRACE_ID}-${client!.spanContext().spanId}-01`);
    expect(header(received, "tracestate")).toBe("vendor=abc");
  });

  test("a new trace when the client sends none; the upstream gets its traceparent", async () => {
    await using t = inMemory(1);
    await using up = new RawUpstream("a");
    await using proxy = startProxy([up.endpoint], { telemetry: { tracing: t.tracing.proxy } });
    expect((await fetch(`${proxy.url}/`)).status).toBe(200);
    await waitFor(() => t.exporter.getFinishedSpans().length === 2, "two spans");
    const [server] = byKind(t.exporter.getFinishedSpans(), SpanKind.SERVER);
    const [client] = byKind(t.exporter.getFinishedSpans(), SpanKind.CLIENT);
    expect(server!.parentSpanContext).toBeUndefined();
    expect(header(up.requests[0]!, "traceparent")).toBe(`00-${server!.spanContext().traceId}-${client!.spanContext().spanId}-01`);
  });

  test("a retried connect shows as two CLIENT spans: the failed one ERROR, the second with resend count 1", async () => {
    await using t = inMemory(1);
    await using up = new RawUpstream("b");
    // Round robin starts at the first endpoint: the dead one.
    await using proxy = startProxy([endpoint(deadPort()), up.endpoint], { telemetry: { tracing: t.tracing.proxy } });
    expect((await fetch(`${proxy.url}/retry`)).status).toBe(200);
    await waitFor(() => t.exporter.getFinishedSpans().length === 3, "three spans");
    const spans = t.exporter.getFinishedSpans();
    const [server] = byKind(spans, SpanKind.SERVER);
    const clients = byKind(spans, SpanKind.CLIENT);
    expect(clients).toHaveLength(2);
    for (const c of clients) expect(c.parentSpanContext?.spanId).toBe(server!.spanContext().spanId);
    const [failed, ok] = clients[0]!.attributes["network.peer.port"] === up.port ? [clients[1]!, clients[0]!] : [clients[0]!, clients[1]!];
    expect(failed.status.code).toBe(SpanStatusCode.ERROR);
    expect(ok.status.code).toBe(SpanStatusCode.UNSET);
    expect(ok.attributes["http.request.resend_count"]).toBe(1);
    expect(ok.attributes["http.response.status_code"]).toBe(200);
    expect(header(up.requests[0]!, "traceparent")).toBe(`00-${server!.spanContext().traceId}-${ok.spanContext().spanId}-01`);
  });

  test("a 502 sets status ERROR on the SERVER span and on the CLIENT spans", async () => {
    await using t = inMemory(1);
    await using proxy = startProxy([endpoint(deadPort())], { telemetry: { tracing: t.tracing.proxy }, connectAttempts: 1 });
    expect((await fetch(`${proxy.url}/down`)).status).toBe(502);
    await waitFor(() => t.exporter.getFinishedSpans().length === 2, "two spans");
    const [server] = byKind(t.exporter.getFinishedSpans(), SpanKind.SERVER);
    const [client] = byKind(t.exporter.getFinishedSpans(), SpanKind.CLIENT);
    expect(server!.status.code).toBe(SpanStatusCode.ERROR);
    expect(server!.attributes["http.response.status_code"]).toBe(502);
    expect(server!.attributes["error.type"]).toBe("connect_failed");
    expect(client!.status.code).toBe(SpanStatusCode.ERROR);
  });

  test("a 503 without endpoints is an ERROR SERVER span with no CLIENT span", async () => {
    await using t = inMemory(1);
    await using proxy = startProxy([], { telemetry: { tracing: t.tracing.proxy } });
    expect((await fetch(`${proxy.url}/`)).status).toBe(503);
    await waitFor(() => t.exporter.getFinishedSpans().length === 1, "one span");
    const [server] = t.exporter.getFinishedSpans();
    expect(server!.kind).toBe(SpanKind.SERVER);
    expect(server!.status.code).toBe(SpanStatusCode.ERROR);
    expect(server!.attributes["error.type"]).toBe("no_endpoints");
  });

  test("ratio 0: no spans; the client's traceparent goes upstream untouched, none is added", async () => {
    await using t = inMemory(0);
    await using up = new RawUpstream("a");
    await using proxy = startProxy([up.endpoint], { telemetry: { tracing: t.tracing.proxy } });
    const notSampled = `00-${TRACE_ID}-${PARENT_ID}-00`;
    expect((await fetch(`${proxy.url}/`, { headers: { traceparent: notSampled, tracestate: "k=v" } })).status).toBe(200);
    expect((await fetch(`${proxy.url}/`)).status).toBe(200);
    await t.tracing.forceFlush();
    expect(t.exporter.getFinishedSpans()).toHaveLength(0);
    expect(header(up.requests[0]!, "traceparent")).toBe(notSampled);
    expect(header(up.requests[0]!, "tracestate")).toBe("k=v");
    expect(header(up.requests[1]!, "traceparent")).toBeUndefined();
  });

  test("50 concurrent requests with distinct traceparents: every link and attribute is right", async () => {
    await using t = inMemory(1);
    await using up = new RawUpstream("a");
    await using proxy = startProxy([up.endpoint], { telemetry: { tracing: t.tracing.proxy } });
    const N = 50;
    const ids = Array.from({ length: N }, (_, i) => ({
      trace: (i + 1).toString(16).padStart(32, "a"),
      parent: (i + 1).toString(16).padStart(16, "b"),
    }));
    const statuses = await Promise.all(
      ids.map(async ({ trace, parent }, i) => {
        const r = await fetch(`${proxy.url}/r/${i}`, { headers: { traceparent: `00-${trace}-${parent}-01` } });
        await r.text();
        return r.status;
      }),
    );
    expect(statuses.every((s) => s === 200)).toBe(true);
    await waitFor(() => t.exporter.getFinishedSpans().length === 2 * N, `${2 * N} spans`);
    const spans = t.exporter.getFinishedSpans();
    const received = new Map(up.requests.map((r) => [r.target, header(r, "traceparent")]));
    for (const [i, { trace, parent }] of ids.entries()) {
      const inTrace = spans.filter((s) => s.spanContext().traceId === trace);
      const server = inTrace.find((s) => s.kind === SpanKind.SERVER)!;
      const client = inTrace.find((s) => s.kind === SpanKind.CLIENT)!;
      expect(inTrace).toHaveLength(2);
      expect(server.parentSpanContext?.spanId).toBe(parent);
      expect(server.attributes["url.path"]).toBe(`/r/${i}`);
      expect(client.parentSpanContext?.spanId).toBe(server.spanContext().spanId);
      expect(client.attributes["url.path"]).toBe(`/r/${i}`);
      expect(received.get(`/r/${i}`)).toBe(`00-${trace}-${client.spanContext().spanId}-01`);
    }
  });
});

describe("TCP spans", () => {
  test("a span per connection with bytes each way, the endpoint and the close reason", async () => {
    await using t = inMemory(1);
    const echo = rt.listenTcp<unknown>({ hostname: "127.0.0.1", port: 0, handlers: { data: (s, c) => void s.write(c), end: (s) => s.end() } });
    await using _echo = { [Symbol.asyncDispose]: async () => echo.stop(true) };
    const ep = podEndpoint(echo.port, "echo-1");
    const r = route([ep], "default/echo:tcp");
    const proxy = makeTcpProxyFactory(rt.connectTcp)({ current: { ...r, balancer: new RoundRobin([ep], () => 0) } }, { ...defaultProxyOptions, telemetry: { tracing: t.tracing.proxy } });
    const listener = rt.listenTcp<unknown>({ hostname: "127.0.0.1", port: 0, handlers: proxy.handlers });
    await using _l = { [Symbol.asyncDispose]: async () => (listener.stop(true), proxy.closeAll()) };

    const got = Promise.withResolvers<string>();
    let text = "";
    const sock = await rt.connectTcp<null>({
      hostname: "127.0.0.1",
      port: listener.port,
      data: null,
      handlers: {
        data: (_s, c) => {
          text += new TextDecoder().decode(c);
          if (text.length >= 11) got.resolve(text);
        },
      },
    });
    sock.write(new TextEncoder().encode("hello world"));
    expect(await got.promise).toBe("hello world");
    sock.end();
    await waitFor(() => t.exporter.getFinishedSpans().length === 1, "the connection span");
    const [span] = t.exporter.getFinishedSpans();
    expect(span!.attributes).toMatchObject({
      "network.transport": "tcp",
      "kubegate.bytes_received": 11,
      "kubegate.bytes_sent": 11,
      "kubegate.close_reason": "client_closed",
      "server.address": "127.0.0.1",
      "server.port": echo.port,
      "k8s.pod.name": "echo-1",
      "k8s.service.name": "echo",
      "kubegate.endpoint.access": "direct",
    });
    expect(span!.status.code).toBe(SpanStatusCode.UNSET);
  });
});
