/** The benchmark's cases: what load, through which kind of entrypoint, measured in what unit. */

export const caseNames = ["http-keepalive", "http-close", "http-64k", "tcp-wrk", "tcp-64k", "tcp-iperf3", "tcp-pipelined", "http-fixed-rate", "h2c"] as const;
export type CaseName = (typeof caseNames)[number];

/** The cases a `--multi` run measures unless `--cases` says otherwise: HTTP and TCP, as the issue asks. */
export const multiDefaultCases: readonly CaseName[] = ["http-keepalive", "tcp-wrk"];

/**
 * Which entrypoint of a proxy a case uses: HTTP, TCP (L4) to the HTTP backends, TCP to iperf3, TCP to the
 * echo backend, or HTTP/2 cleartext (h2c both sides) to the h2c backends.
 */
export type EndpointKind = "http" | "tcp" | "iperf" | "echo" | "h2c";

/**
 * The load generator of a case: wrk (closed loop), h2load (HTTP/1.1 at a fixed rate), iperf3 (one stream), our
 * pipelined client, or h2load over HTTP/2 with prior knowledge (closed loop, streams multiplexed: "h2load-h2c").
 */
export type LoadKind = "wrk" | "iperf3" | "h2load" | "pipeline" | "h2load-h2c";

/** One case. */
export interface CaseDef {
  readonly name: CaseName;
  readonly title: string;
  readonly endpoint: EndpointKind;
  readonly load: LoadKind;
  readonly path: string;
  readonly headers: readonly string[];
}

export const cases: readonly CaseDef[] = [
  { name: "http-keepalive", title: "HTTP keep-alive, 2-byte body", endpoint: "http", load: "wrk", path: "/", headers: [] },
  { name: "http-close", title: "HTTP Connection: close", endpoint: "http", load: "wrk", path: "/", headers: ["Connection: close"] },
  { name: "http-64k", title: "HTTP keep-alive, 64 KiB body", endpoint: "http", load: "wrk", path: "/64k", headers: [] },
  { name: "tcp-wrk", title: "TCP entrypoint (L4), wrk keep-alive", endpoint: "tcp", load: "wrk", path: "/", headers: [] },
  { name: "tcp-64k", title: "TCP entrypoint (L4), wrk keep-alive, 64 KiB body", endpoint: "tcp", load: "wrk", path: "/64k", headers: [] },
  { name: "tcp-iperf3", title: "TCP entrypoint, iperf3 1 stream", endpoint: "iperf", load: "iperf3", path: "", headers: [] },
  {
    name: "tcp-pipelined",
    title: "TCP entrypoint to an echo backend, small messages pipelined both ways",
    endpoint: "echo",
    load: "pipeline",
    path: "",
    headers: [],
  },
  { name: "http-fixed-rate", title: "HTTP at half nginx's peak (open loop)", endpoint: "http", load: "h2load", path: "/", headers: [] },
  { name: "h2c", title: "HTTP/2 cleartext both sides, h2load -c16 -m32, 2-byte body", endpoint: "h2c", load: "h2load-h2c", path: "/", headers: [] },
];

/** The definition of `name`. */
export function caseDef(name: CaseName): CaseDef {
  return cases.find((c) => c.name === name)!;
}
