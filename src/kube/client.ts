/**
 * A small Kubernetes API client over the runtime's own fetch (see src/runtime/*\/http.ts): list,
 * watch (streamed NDJSON), get, create, patch, updateStatus, delete.
 *
 * Credentials come from a {@link KubeConnection}; on a 401 they are dropped and fetched again
 * once (rotated token file, expired exec credential) before the error is raised. Every failure is
 * a {@link KubeApiError} whose message says what was asked, what the server answered and what to do.
 *
 * While the API server gives no answer at all, callers wait on {@link KubeClient.untilReachable}: one cheap probe
 * (`GET /readyz`) for everything sharing the client, about once a second, instead of each retrying on its own.
 */
import { rt, type HttpClient, type TlsClientOptions } from "../runtime/index.ts";
import { ReachabilityProbe, type ProbeOptions, type ProbeResult } from "./backoff.ts";
import type { Credentials, KubeConnection } from "./kubeconfig.ts";
import { Kinds, type KindName } from "./objects.ts";

/** An API resource: group, version, plural and scope. The entries of `Kinds` are ResourceRefs. */
export interface ResourceRef {
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  readonly namespaced: boolean;
}

/** A kind kubegate knows by name, or any resource. */
export type Resource = KindName | ResourceRef;

/** A JSON object as the API server sends it. */
export type KubeObject = Record<string, unknown>;

export interface ListOptions {
  /** Only this namespace (default: all namespaces). */
  readonly namespace?: string | undefined;
  /** Page size. */
  readonly limit?: number | undefined;
  /** The `continue` token of the previous page. */
  readonly continue?: string | undefined;
  readonly labelSelector?: string | undefined;
  readonly fieldSelector?: string | undefined;
  readonly resourceVersion?: string | undefined;
  readonly signal?: AbortSignal | undefined;
}

export interface ListResult {
  readonly items: KubeObject[];
  readonly resourceVersion: string;
  /** Set when more pages follow. */
  readonly continue?: string | undefined;
}

export interface WatchOptions {
  readonly namespace?: string | undefined;
  /** Start after this resourceVersion (from a list or the last event). */
  readonly resourceVersion?: string | undefined;
  /** Ask the server to end the stream after this long. */
  readonly timeoutSeconds?: number | undefined;
  readonly allowWatchBookmarks?: boolean | undefined;
  readonly labelSelector?: string | undefined;
  readonly fieldSelector?: string | undefined;
  /** Aborting ends the stream (the iterator rejects with the abort reason). */
  readonly signal?: AbortSignal | undefined;
  /** Called when the server accepted the watch (status 200), before any event. */
  readonly onOpen?: (() => void) | undefined;
}

/** One watch event. `ERROR` events are not yielded: the iterator throws a {@link KubeApiError} instead. */
export interface WatchEvent {
  readonly type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK";
  readonly object: KubeObject;
}

export type PatchType = "merge" | "strategic" | "json" | "apply";

const patchContentTypes: Record<PatchType, string> = {
  merge: "application/merge-patch+json",
  strategic: "application/strategic-merge-patch+json",
  json: "application/json-patch+json",
  apply: "application/apply-patch+yaml",
};

/** A request to the API server failed: network error, HTTP error status, or an ERROR watch event. */
export class KubeApiError extends Error {
  override name = "KubeApiError";
  /** HTTP status (or the Status object's `code`); undefined when no answer came (network error, timeout). */
  readonly status: number | undefined;
  /** The Status object's `reason`: `Expired`, `Gone`, `Unauthorized`, `NotFound`, ... */
  readonly reason: string | undefined;
  /** Seconds the server asked us to wait (`Retry-After`, or `details.retryAfterSeconds`). */
  readonly retryAfter: number | undefined;
  /** What was asked, e.g. `list services`. */
  readonly operation: string;
  /** No answer came: the connection was refused, timed out or broke mid-stream (wait with `untilReachable`). */
  readonly unreachable: boolean;

  constructor(
    message: string,
    init: {
      operation: string;
      status?: number | undefined;
      reason?: string | undefined;
      retryAfter?: number | undefined;
      unreachable?: boolean | undefined;
      cause?: unknown;
    },
  ) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.operation = init.operation;
    this.status = init.status;
    this.reason = init.reason;
    this.retryAfter = init.retryAfter;
    this.unreachable = init.unreachable ?? false;
  }

  /** The resourceVersion is too old (410 Gone / Expired): list again. */
  get expired(): boolean {
    return this.status === 410 || this.reason === "Expired" || this.reason === "Gone";
  }
}

export interface KubeClientOptions {
  /** Timeout for requests other than watches (default 60 000 ms). */
  readonly requestTimeoutMs?: number | undefined;
  /** Sent as `User-Agent` (default `kubegate`). */
  readonly userAgent?: string | undefined;
  /** The probe of {@link KubeClient.untilReachable}: its pace, and how long one probe may wait for an answer (default 5000 ms). */
  readonly probe?: (ProbeOptions & { readonly timeoutMs?: number | undefined }) | undefined;
  /** Makes the HTTP client for a TLS configuration (default: the runtime's `rt.createHttpClient`). */
  readonly createHttpClient?: ((tls: TlsClientOptions) => HttpClient) | undefined;
}

interface RequestInit_ {
  readonly method?: string;
  readonly query?: Record<string, string | number | boolean | undefined> | undefined;
  readonly body?: unknown;
  readonly contentType?: string;
  readonly signal?: AbortSignal | undefined;
  /** No request timeout (watches). */
  readonly stream?: boolean;
  /** Instead of the client's request timeout. */
  readonly timeoutMs?: number;
}

/**
 * The API client.
 *
 * @example
 * using client = new KubeClient(await loadKubeConfig());
 * const { items, resourceVersion } = await client.list("Service", { limit: 500 });
 * for await (const ev of client.watch("Service", { resourceVersion, allowWatchBookmarks: true })) console.log(ev.type);
 */
export class KubeClient implements Disposable {
  readonly connection: KubeConnection;
  readonly #timeoutMs: number;
  readonly #userAgent: string;
  readonly #createHttpClient: (tls: TlsClientOptions) => HttpClient;
  readonly #probe: ReachabilityProbe;
  #http: { client: HttpClient; cert: string | undefined; key: string | undefined } | undefined;

  constructor(connection: KubeConnection, options: KubeClientOptions = {}) {
    this.connection = connection;
    this.#timeoutMs = options.requestTimeoutMs ?? 60_000;
    this.#userAgent = options.userAgent ?? "kubegate";
    this.#createHttpClient = options.createHttpClient ?? ((tls) => rt.createHttpClient(tls));
    const probeTimeoutMs = options.probe?.timeoutMs ?? 5000;
    this.#probe = new ReachabilityProbe((signal) => this.#ping(signal, probeTimeoutMs), options.probe);
  }

  /**
   * Resolves once the API server answers again (any HTTP status; after the `Retry-After` it sent, if any), or early
   * when `signal` aborts. Every caller waits on the same probe: `GET /readyz` with this client's credentials, one at
   * a time, started about once a second (0.5-1.5 s apart by default), so a node sends ~1 request/s during an outage
   * however many watches it lost.
   *
   * @example
   * const err = await client.list("Service").catch((e: unknown) => e);
   * if (err instanceof KubeApiError && err.unreachable) await client.untilReachable(signal); // then try again
   */
  untilReachable(signal?: AbortSignal): Promise<void> {
    return this.#probe.untilAnswered(signal);
  }

  /** One page of objects. */
  async list(resource: Resource, options: ListOptions = {}): Promise<ListResult> {
    const ref = resolve(resource);
    const res = await this.#request(`list ${ref.plural}`, pathOf(ref, options.namespace), {
      query: {
        limit: options.limit,
        continue: options.continue,
        labelSelector: options.labelSelector,
        fieldSelector: options.fieldSelector,
        resourceVersion: options.resourceVersion,
      },
      signal: options.signal,
    });
    const body = (await readJson(res, `list ${ref.plural}`)) as {
      items?: KubeObject[] | null;
      metadata?: { resourceVersion?: string; continue?: string };
    };
    return {
      items: body.items ?? [],
      resourceVersion: body.metadata?.resourceVersion ?? "",
      ...(body.metadata?.continue ? { continue: body.metadata.continue } : {}),
    };
  }

  /**
   * Watch a resource: yields events until the server ends the stream (normal end: the iterator
   * finishes) or it fails (the iterator throws a {@link KubeApiError}; `expired` for 410).
   */
  async *watch(resource: Resource, options: WatchOptions = {}): AsyncGenerator<WatchEvent, void, undefined> {
    const ref = resolve(resource);
    const operation = `watch ${ref.plural}`;
    const res = await this.#request(operation, pathOf(ref, options.namespace), {
      query: {
        watch: 1,
        resourceVersion: options.resourceVersion,
        allowWatchBookmarks: options.allowWatchBookmarks,
        timeoutSeconds: options.timeoutSeconds,
        labelSelector: options.labelSelector,
        fieldSelector: options.fieldSelector,
      },
      signal: options.signal,
      stream: true,
    });
    if (!res.body) throw new KubeApiError(`API server sent no body for "${operation}"`, { operation });
    options.onOpen?.();
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        let chunk: Awaited<ReturnType<typeof reader.read>>;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (options.signal?.aborted) throw options.signal.reason;
          throw new KubeApiError(`Watch of ${ref.plural} broke: ${errorText(err)}`, { operation, unreachable: true, cause: err });
        }
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true });
        let start = 0;
        for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n", start)) {
          const line = buffer.slice(start, nl);
          start = nl + 1;
          if (line.trim()) yield parseEvent(line, operation);
        }
        buffer = start > 0 ? buffer.slice(start) : buffer;
      }
      buffer += decoder.decode();
      if (buffer.trim()) yield parseEvent(buffer, operation);
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  /** One object. */
  async get(resource: Resource, namespace: string | undefined, name: string, signal?: AbortSignal): Promise<KubeObject> {
    const ref = resolve(resource);
    const res = await this.#request(`get ${ref.plural} "${nameOf(namespace, name)}"`, pathOf(ref, namespace, name), { signal });
    return (await readJson(res, `get ${ref.plural}`)) as KubeObject;
  }

  /** Create an object; the namespace is taken from `metadata.namespace` unless given. */
  async create(resource: Resource, object: KubeObject, namespace?: string): Promise<KubeObject> {
    const ref = resolve(resource);
    const ns = namespace ?? metaOf(object).namespace;
    const res = await this.#request(`create ${ref.plural} "${nameOf(ns, metaOf(object).name ?? "")}"`, pathOf(ref, ns), {
      method: "POST",
      body: object,
    });
    return (await readJson(res, `create ${ref.plural}`)) as KubeObject;
  }

  /** Patch an object (or its `status` with `subresource: "status"`). */
  async patch(
    resource: Resource,
    namespace: string | undefined,
    name: string,
    patch: unknown,
    options: { type?: PatchType; subresource?: string; fieldManager?: string; force?: boolean } = {},
  ): Promise<KubeObject> {
    const ref = resolve(resource);
    const type = options.type ?? "merge";
    const path = pathOf(ref, namespace, name) + (options.subresource ? `/${options.subresource}` : "");
    const res = await this.#request(`patch ${ref.plural} "${nameOf(namespace, name)}"`, path, {
      method: "PATCH",
      body: patch,
      contentType: patchContentTypes[type],
      query: { fieldManager: options.fieldManager, force: options.force },
    });
    return (await readJson(res, `patch ${ref.plural}`)) as KubeObject;
  }

  /** Replace an object's `status` (PUT to the status subresource; `metadata.resourceVersion` guards conflicts). */
  async updateStatus(resource: Resource, object: KubeObject): Promise<KubeObject> {
    const ref = resolve(resource);
    const meta = metaOf(object);
    const name = meta.name ?? "";
    const res = await this.#request(
      `update status of ${ref.plural} "${nameOf(meta.namespace, name)}"`,
      `${pathOf(ref, meta.namespace, name)}/status`,
      { method: "PUT", body: object },
    );
    return (await readJson(res, `update status of ${ref.plural}`)) as KubeObject;
  }

  /** Delete an object. */
  async delete(resource: Resource, namespace: string | undefined, name: string): Promise<void> {
    const ref = resolve(resource);
    const res = await this.#request(`delete ${ref.plural} "${nameOf(namespace, name)}"`, pathOf(ref, namespace, name), {
      method: "DELETE",
    });
    await res.body?.cancel();
  }

  /** Release pooled connections; stop probing (pending `untilReachable` calls resolve). */
  close(): void {
    this.#probe.close();
    this.#http?.client.close();
    this.#http = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #client(creds: Credentials): HttpClient {
    const cert = creds.cert ?? this.connection.tls.cert;
    const key = creds.key ?? this.connection.tls.key;
    if (this.#http && this.#http.cert === cert && this.#http.key === key) return this.#http.client;
    this.#http?.client.close();
    const tls: TlsClientOptions = { ...this.connection.tls, cert, key };
    this.#http = { client: this.#createHttpClient(tls), cert, key };
    return this.#http.client;
  }

  /** One probe: did the server answer `GET /readyz` at all (a 500 "not ready" is an answer too)? */
  async #ping(signal: AbortSignal, timeoutMs: number): Promise<ProbeResult> {
    try {
      const res = await this.#request("probe the API server", "/readyz", { signal, timeoutMs });
      await res.body?.cancel();
      return { answered: true, retryAfterMs: 0 };
    } catch (err) {
      if (!(err instanceof KubeApiError) || err.unreachable) return { answered: false };
      return { answered: true, retryAfterMs: (err.retryAfter ?? 0) * 1000 };
    }
  }

  async #request(operation: string, path: string, init: RequestInit_): Promise<Response> {
    const url = new URL(this.connection.server + path);
    for (const [k, v] of Object.entries(init.query ?? {})) if (v !== undefined && v !== "") url.searchParams.set(k, String(v));
    const auth = this.connection.auth;
    for (let attempt = 0; ; attempt++) {
      let creds: Credentials;
      try {
        creds = await auth.credentials();
      } catch (err) {
        throw new KubeApiError(`Cannot ${operation}: ${errorText(err)}`, { operation, cause: err });
      }
      const timeoutMs = init.timeoutMs ?? this.#timeoutMs;
      const signals = [init.signal, init.stream ? undefined : AbortSignal.timeout(timeoutMs)].filter(
        (s): s is AbortSignal => s !== undefined,
      );
      const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
      const headers: Record<string, string> = {
        accept: "application/json",
        "user-agent": this.#userAgent,
        ...creds.headers,
      };
      if (init.body !== undefined) headers["content-type"] = init.contentType ?? "application/json";
      let res: Response;
      try {
        res = await this.#client(creds).fetch(url, {
          method: init.method ?? "GET",
          headers,
          ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
          ...(signal ? { signal } : {}),
        });
      } catch (err) {
        if (init.signal?.aborted) throw init.signal.reason;
        const why = signal?.aborted ? `no answer within ${timeoutMs} ms` : errorText(err);
        throw new KubeApiError(`Cannot ${operation} at ${this.connection.server}: ${why}`, { operation, unreachable: true, cause: err });
      }
      if (res.ok) return res;
      if (res.status === 401 && attempt === 0 && auth.invalidate()) {
        await res.body?.cancel().catch(() => {});
        continue;
      }
      throw await this.#errorFrom(operation, res);
    }
  }

  async #errorFrom(operation: string, res: Response): Promise<KubeApiError> {
    let status: { message?: string; reason?: string; code?: number; details?: { retryAfterSeconds?: number } } = {};
    try {
      const text = await res.text();
      try {
        status = JSON.parse(text);
      } catch {
        status = { message: text.trim().slice(0, 500) };
      }
    } catch {
      // The body is lost; the status line is enough.
    }
    const header = res.headers.get("retry-after");
    const retryAfter = header ? parseRetryAfter(header) : status.details?.retryAfterSeconds;
    const statusText = res.statusText || httpReasons[res.status] || "";
    const head = `API server answered ${res.status}${statusText ? ` ${statusText}` : ""} for "${operation}"`;
    const o = this.connection.origin;
    const who = `the credentials in ${o.source} (context "${o.context}", user "${o.user}", ${this.connection.auth.description})`;
    let message: string;
    if (res.status === 401) {
      message = `${head}: ${who} were rejected; refresh them (kubectl config view) or check the ${this.connection.auth.description}`;
    } else if (res.status === 403) {
      message = `${head}: ${who} are not allowed to ${operation}; grant the access with RBAC (the ClusterRole in deploy/base grants what kubegate needs: list and watch on services, endpointslices and nodes)${status.message ? `. Server said: ${status.message}` : ""}`;
    } else {
      message = `${head}${status.message ? `: ${status.message}` : ""}`;
    }
    return new KubeApiError(message, {
      operation,
      status: res.status,
      reason: status.reason,
      retryAfter,
    });
  }
}

function parseEvent(line: string, operation: string): WatchEvent {
  let ev: { type?: string; object?: KubeObject };
  try {
    ev = JSON.parse(line);
  } catch (err) {
    throw new KubeApiError(`API server sent a malformed watch event for "${operation}": ${line.slice(0, 200)}`, {
      operation,
      cause: err,
    });
  }
  const obj = ev.object;
  if (ev.type === "ERROR") {
    const st = (obj ?? {}) as { code?: number; reason?: string; message?: string; details?: { retryAfterSeconds?: number } };
    return throwStatus(st, operation);
  }
  if (
    (ev.type !== "ADDED" && ev.type !== "MODIFIED" && ev.type !== "DELETED" && ev.type !== "BOOKMARK") ||
    typeof obj !== "object" ||
    obj === null
  ) {
    throw new KubeApiError(`API server sent a watch event of unknown shape for "${operation}": ${line.slice(0, 200)}`, {
      operation,
    });
  }
  return { type: ev.type, object: obj };
}

function throwStatus(
  st: { code?: number; reason?: string; message?: string; details?: { retryAfterSeconds?: number } },
  operation: string,
): never {
  throw new KubeApiError(
    `API server ended "${operation}" with an error: ${st.code ?? "?"} ${st.reason ?? ""}${st.message ? `: ${st.message}` : ""}`,
    { operation, status: st.code, reason: st.reason, retryAfter: st.details?.retryAfterSeconds },
  );
}

async function readJson(res: Response, operation: string): Promise<unknown> {
  try {
    return await res.json();
  } catch (err) {
    throw new KubeApiError(`API server sent a malformed answer for "${operation}": ${errorText(err)}`, {
      operation,
      status: res.status,
      cause: err,
    });
  }
}

function resolve(resource: Resource): ResourceRef {
  return typeof resource === "string" ? Kinds[resource] : resource;
}

/** `/api/v1/namespaces/ns/services/name` */
export function pathOf(ref: ResourceRef, namespace?: string, name?: string): string {
  let p = ref.group ? `/apis/${ref.group}/${ref.version}` : `/api/${ref.version}`;
  if (ref.namespaced && namespace) p += `/namespaces/${encodeURIComponent(namespace)}`;
  p += `/${ref.plural}`;
  if (name !== undefined) p += `/${encodeURIComponent(name)}`;
  return p;
}

function metaOf(object: KubeObject): { name?: string; namespace?: string } {
  const m = object["metadata"];
  return typeof m === "object" && m !== null ? (m as { name?: string; namespace?: string }) : {};
}

function nameOf(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

function parseRetryAfter(value: string): number | undefined {
  const n = Number(value);
  if (Number.isFinite(n)) return Math.max(0, n);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

const httpReasons: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  409: "Conflict",
  410: "Gone",
  422: "Unprocessable Entity",
  429: "Too Many Requests",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

function errorText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === "string" && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}
