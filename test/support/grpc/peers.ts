/**
 * Real gRPC peers for the HTTP/2 data-plane tests: Debian's python3-grpcio on both ends (server.py, client.py
 * beside this file; no generated code), started as child processes through `node:child_process`, so the same
 * helpers run on Bun and Deno. The service is `kubegate.test.Echo`; every reply names the server that made it,
 * so a test counts calls per endpoint. Also the request body h2load and curl need to make a valid gRPC call.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const PYTHON = "/usr/bin/python3";
const script = (file: string) => fileURLToPath(new URL(file, import.meta.url).href);

/** gRPC status code names, as client.py reports them. */
export type GrpcCode =
  | "OK"
  | "CANCELLED"
  | "UNKNOWN"
  | "INVALID_ARGUMENT"
  | "DEADLINE_EXCEEDED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "PERMISSION_DENIED"
  | "RESOURCE_EXHAUSTED"
  | "FAILED_PRECONDITION"
  | "ABORTED"
  | "OUT_OF_RANGE"
  | "UNIMPLEMENTED"
  | "INTERNAL"
  | "UNAVAILABLE"
  | "DATA_LOSS"
  | "UNAUTHENTICATED";

/** How a call ended. `reason` is `x-kubegate-reason` from the trailing (or initial) metadata, when present. */
export interface CallStatus {
  readonly code: GrpcCode;
  readonly details: string;
  readonly reason?: string;
}

/** Fields every scenario may set. */
interface CallOptions {
  /** Sent with every call (lower-case keys; values of `-bin` keys in base64). */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Each call's deadline (sent as `grpc-timeout`). */
  readonly deadlineMs?: number;
}

/** A scenario for {@link runGrpcClient}: every call of it goes over ONE channel (one HTTP/2 connection). */
export type GrpcScenario = CallOptions &
  (
    | {
        /** `count` Unary calls one after another, `intervalMs` apart; replies counted per server. */
        readonly kind: "unary";
        readonly count: number;
        readonly payload?: string;
        readonly intervalMs?: number;
        /** Report each call's start time and outcome. */
        readonly timeline?: boolean;
      }
    /** One ServerStream call: `count` replies of `size` padding bytes each, `intervalMs` apart. */
    | { readonly kind: "server_stream"; readonly count: number; readonly size?: number; readonly intervalMs?: number }
    /** One ClientStream call sending `count` messages of `size` bytes (default 16). */
    | { readonly kind: "client_stream"; readonly count: number; readonly size?: number }
    /** One BidiStream call, ping-pong: each of `count` messages waits for its echo. */
    | { readonly kind: "bidi"; readonly count: number }
    /** Sleep `sleepMs` with a deadline of `deadlineMs`: expect DEADLINE_EXCEEDED when it is the shorter. */
    | { readonly kind: "deadline"; readonly sleepMs: number; readonly deadlineMs: number }
    /** Sleep `sleepMs`, cancelled by the client after `afterMs` (RST_STREAM). */
    | { readonly kind: "cancel"; readonly sleepMs: number; readonly afterMs: number }
    /** Fail with the status `code` (a name, e.g. "UNAVAILABLE") and `message`, and these trailers. */
    | { readonly kind: "fail"; readonly code: GrpcCode; readonly message?: string; readonly trailers?: Readonly<Record<string, string>> }
    /** One Big call: a request of `requestMiB` padding, a reply of `replyMiB` in all. */
    | { readonly kind: "big"; readonly replyMiB?: number; readonly requestMiB?: number }
    /** `calls` Sleep calls of `sleepMs` (default 100) in flight at once. */
    | { readonly kind: "concurrent"; readonly calls: number; readonly sleepMs?: number }
    /** One Metadata call: what the server saw and what it sent back in the trailers. */
    | { readonly kind: "metadata" }
  );

export type GrpcScenarioKind = GrpcScenario["kind"];

/** One call of a unary timeline: its start (ms after the first) and the server that answered, or the code. */
export type TimelineEntry = { readonly atMs: number; readonly server: string } | { readonly atMs: number; readonly code: GrpcCode };

/** What client.py prints for each kind. */
export interface GrpcResults {
  unary: {
    readonly ok: number;
    /** Replies per server name. */
    readonly byServer: Readonly<Record<string, number>>;
    /** One per failed call (and a reply that did not echo the request, as code "OK" with details). */
    readonly errors: readonly CallStatus[];
    readonly elapsedMs: number;
    readonly callsPerSecond: number;
    readonly timeline?: readonly TimelineEntry[];
  };
  server_stream: {
    readonly messages: number;
    readonly bytes: number;
    readonly servers: readonly string[];
    /** Every reply was `<name>:<i>:` + the padding, in order. */
    readonly intact: boolean;
    readonly status: CallStatus;
  };
  client_stream: {
    readonly sent: number;
    readonly sentBytes: number;
    /** What the server counted, or null on error. */
    readonly reply: { readonly name: string; readonly count: number; readonly bytes: number } | null;
    readonly status: CallStatus;
  };
  bidi: {
    readonly sent: number;
    readonly received: number;
    readonly servers: readonly string[];
    /** Every echo was `<name>:` + the message sent, in order. */
    readonly inOrder: boolean;
    readonly status: CallStatus;
  };
  deadline: {
    readonly status: CallStatus;
    /** The Sleep reply when the call was not cut short; `deadlineMs` there is what the server saw left. */
    readonly reply: { readonly name: string; readonly sleptMs: number; readonly deadlineMs: number | null } | null;
    readonly elapsedMs: number;
  };
  cancel: { readonly cancelled: boolean; readonly status: CallStatus; readonly elapsedMs: number };
  fail: { readonly status: CallStatus; readonly initial: Readonly<Record<string, string>>; readonly trailing: Readonly<Record<string, string>> };
  big: {
    readonly status: CallStatus;
    readonly elapsedMs: number;
    /** The rest is present when the call succeeded. */
    readonly server?: string;
    readonly replyBytes?: number;
    readonly replyIntact?: boolean;
    readonly requestBytes?: number;
    readonly requestReceived?: number;
    readonly requestIntact?: boolean;
  };
  concurrent: {
    readonly ok: number;
    readonly byServer: Readonly<Record<string, number>>;
    readonly errors: readonly CallStatus[];
    readonly elapsedMs: number;
  };
  metadata: {
    /** null on error. */
    readonly server: string | null;
    /** The request metadata as the server saw it (binary values base64). */
    readonly seen: Readonly<Record<string, string>>;
    /** What came back in the trailers. */
    readonly trailing: Readonly<Record<string, string>>;
    readonly status: CallStatus;
  };
}

export type GrpcResult<K extends GrpcScenarioKind = GrpcScenarioKind> = { readonly kind: K } & GrpcResults[K];

/** What server.py counted so far. A call is cancelled when a RST_STREAM or its deadline cut it short. */
export interface GrpcServerStats {
  readonly name: string;
  readonly calls: number;
  readonly byMethod: Readonly<Record<string, number>>;
  readonly ok: number;
  /** Ended with a status other than OK (Fail). */
  readonly failed: number;
  readonly cancelled: number;
  readonly cancelledByMethod: Readonly<Record<string, number>>;
  /** Of the cancelled, those whose deadline had passed. */
  readonly deadlines: number;
  readonly inFlight: number;
  readonly maxInFlight: number;
  /** Distinct client addresses (ip:port) seen: connections opened to this server. */
  readonly connections: number;
}

export interface GrpcServer extends AsyncDisposable {
  readonly name: string;
  readonly port: number;
  readonly pid: number;
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>;
  stats(): Promise<GrpcServerStats>;
}

/**
 * Start server.py on `host` (127.0.0.1):`port` (0: any). Dispose sends SIGTERM to its PID (it stops after
 * `graceMs`, default 0, for calls in flight) and waits for the exit (SIGKILL after `graceMs` + 2 s).
 *
 * @example
 * await using a = await startGrpcServer({ name: "a" });
 * const r = await runGrpcClient(a.port, { kind: "unary", count: 10 }); // r.byServer: { a: 10 }
 */
export async function startGrpcServer({
  name,
  host = "127.0.0.1",
  port = 0,
  maxConcurrentStreams,
  graceMs = 0,
}: {
  name: string;
  host?: string;
  port?: number;
  maxConcurrentStreams?: number;
  graceMs?: number;
}): Promise<GrpcServer> {
  const args = [script("server.py"), "--name", name, "--host", host, "--port", String(port), "--grace-ms", String(graceMs)];
  if (maxConcurrentStreams !== undefined) args.push("--max-concurrent-streams", String(maxConcurrentStreams));
  const child = spawn(PYTHON, args, { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
  child.stdin.on("error", () => {}); // EPIPE once it has exited: `exited` reports that
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const listening = Promise.withResolvers<number>();
  const pending: { resolve: (s: GrpcServerStats) => void; reject: (e: Error) => void }[] = [];
  let buffered = "";
  child.stdout.on("data", (d) => {
    buffered += d;
    for (let i = buffered.indexOf("\n"); i >= 0; i = buffered.indexOf("\n")) {
      const line = JSON.parse(buffered.slice(0, i)) as { port?: number; stats?: GrpcServerStats };
      buffered = buffered.slice(i + 1);
      if (line.port !== undefined) listening.resolve(line.port);
      if (line.stats) pending.shift()?.resolve(line.stats);
    }
  });
  void exited.then((code) => {
    const error = new Error(`gRPC server "${name}" exited with code ${code}: ${stderr}`);
    listening.reject(error);
    for (const p of pending.splice(0)) p.reject(error);
  });
  const boundPort = await listening.promise;
  let running = true;
  void exited.then(() => (running = false));
  return {
    name,
    port: boundPort,
    pid: child.pid!,
    exited,
    stats() {
      if (!running) return Promise.reject(new Error(`gRPC server "${name}" has exited`));
      const reply = Promise.withResolvers<GrpcServerStats>();
      pending.push(reply);
      child.stdin.write("stats\n");
      return reply.promise;
    },
    async [Symbol.asyncDispose]() {
      if (!running) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs + 2_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Run one scenario with client.py against `host` (127.0.0.1):`port` and resolve with its result. Rejects when
 * the client fails or runs over `timeoutMs` (default 30 s; then it is killed by PID). Failed calls are results,
 * not rejections.
 *
 * @example
 * const r = await runGrpcClient(port, { kind: "fail", code: "UNAVAILABLE" }); // r.status.code: "UNAVAILABLE"
 */
export async function runGrpcClient<S extends GrpcScenario>(
  port: number,
  scenario: S,
  { host = "127.0.0.1", timeoutMs = 30_000 }: { host?: string; timeoutMs?: number } = {},
): Promise<GrpcResult<S["kind"]>> {
  const target = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  const child = spawn(PYTHON, [script("client.py"), target, JSON.stringify(scenario)], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
  clearTimeout(timer);
  if (timedOut) throw new Error(`gRPC client "${scenario.kind}" ran over ${timeoutMs} ms: ${stderr}`);
  if (code !== 0) throw new Error(`gRPC client "${scenario.kind}" exited with code ${code}: ${stderr}`);
  return JSON.parse(stdout) as GrpcResult<S["kind"]>;
}

/**
 * `message` in gRPC's length-prefixed framing: a 0 byte (not compressed), the length (4 bytes, big-endian), the
 * bytes.
 *
 * @example grpcFrame("ping") // Uint8Array [0, 0, 0, 0, 4, 112, 105, 110, 103]
 */
export function grpcFrame(message: string | Uint8Array): Uint8Array {
  const bytes = typeof message === "string" ? new TextEncoder().encode(message) : message;
  const framed = new Uint8Array(5 + bytes.length);
  new DataView(framed.buffer).setUint32(1, bytes.length);
  framed.set(bytes, 5);
  return framed;
}

/**
 * A file holding one framed request, for `h2load -d` and `curl --data-binary @file`; removed on dispose. With
 * {@link grpcH2loadArgs} each h2load request is a valid unary call (h2load counts HTTP statuses only: check the
 * server's stats for the gRPC outcome).
 *
 * @example
 * await using body = await grpcBodyFile("ping");
 * spawn("h2load", ["-n1000", "-c4", "-m16", ...grpcH2loadArgs(port, body.path)]);
 */
export async function grpcBodyFile(message: string | Uint8Array): Promise<{ readonly path: string } & AsyncDisposable> {
  const tmp = await mkdtemp(join(tmpdir(), "kubegate-grpc-"));
  const path = join(tmp, "request.bin");
  await writeFile(path, grpcFrame(message));
  return { path, [Symbol.asyncDispose]: () => rm(tmp, { recursive: true, force: true }) };
}

/** The request headers a gRPC server requires besides the method and path (for `-H` of h2load and curl). */
export const GRPC_REQUEST_HEADERS = ["content-type: application/grpc", "te: trailers"] as const;

/** h2load's arguments (after the load flags) for unary calls of `method` on 127.0.0.1:`port` with this body. */
export function grpcH2loadArgs(port: number, bodyFile: string, method = "/kubegate.test.Echo/Unary"): string[] {
  return [...GRPC_REQUEST_HEADERS.flatMap((h) => ["-H", h]), "-d", bodyFile, `http://127.0.0.1:${port}${method}`];
}
