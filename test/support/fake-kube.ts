/**
 * An in-memory API server behind the controller's narrow client (src/controller/client.ts), for the controller's
 * tests: objects by resource, a global resourceVersion bumped on every change, 404 for what is absent, 409 for a
 * stale `metadata.resourceVersion` or a name taken, merge patches (of `/status` too), list and watch from a
 * resourceVersion, a log of every call and who made it, and injected faults. Objects load from YAML fixtures.
 * The wire-level test API server (apiserver.ts) stays for kube/ and end-to-end suites.
 */
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import type { ControllerClient, MergePatchOptions } from "../../src/controller/client.ts";
import { KubeApiError, type KubeObject, type ListOptions, type Resource, type WatchEvent, type WatchOptions } from "../../src/kube/client.ts";
import { Kinds } from "../../src/kube/objects.ts";
import type { ReflectorTuning } from "../../src/kube/reflector.ts";
import { silentLogger } from "../../src/log.ts";
import { mergePatch } from "./apiserver.ts";

/** One call through a client: what was asked, by whom, and the status answered (undefined while pending or hung). */
export interface FakeCall {
  readonly user: string;
  readonly verb: "get" | "list" | "watch" | "create" | "patch";
  /** The plural: `services`, `leases`, `events`, ... */
  readonly resource: string;
  readonly subresource?: string | undefined;
  readonly namespace?: string | undefined;
  readonly name?: string | undefined;
  readonly body?: unknown;
  status?: number | undefined;
}

/** Which calls fail and how: a KubeApiError of `status` (default 500), or no answer at all (`hang`). */
export interface Fault {
  readonly match?: ((call: FakeCall) => boolean) | undefined;
  readonly status?: number | undefined;
  readonly hang?: boolean | undefined;
}

type Stored = { [key: string]: unknown; metadata: { name: string; namespace?: string; resourceVersion: string; [k: string]: unknown } };
type Change = { readonly rv: number; readonly resource: string; readonly event: WatchEvent };

/** Reflector timings against the fake: its watches never stall (no watchdog restarts); retries are quick. */
export const fakeTuning: ReflectorTuning = { inactivityTimeoutMs: 60_000, backoff: { baseMs: 5, capMs: 50 }, log: silentLogger };

const reasons: Record<number, string> = { 403: "Forbidden", 404: "NotFound", 409: "Conflict", 500: "InternalError" };
/** What the wire would carry: a JSON copy (undefined dropped). */
const wire = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);


/** `services` for a Resource, or for a kind name or plural given by a test. */
function pluralOf(resource: Resource | string): string {
  if (typeof resource !== "string") return resource.plural;
  return resource in Kinds ? Kinds[resource as keyof typeof Kinds].plural : resource.toLowerCase().replace(/s?$/, "s");
}

const keyOf = (namespace: string | undefined, name: string) => (namespace ? `${namespace}/${name}` : name);

/**
 * @example
 * const kube = new FakeKube().load(`${import.meta.dir}/fixtures/node-addresses.yaml`);
 * await using lb = startLbController({ client: kube.client("node-a"), nodeName: "node-a" });
 * kube.get("services", "default", "web"); // the object as stored, status written
 */
export class FakeKube {
  /** Every client call, in order. */
  readonly calls: FakeCall[] = [];
  readonly #objects = new Map<string, Map<string, Stored>>();
  readonly #changes: Change[] = [];
  readonly #wake = new Set<() => void>();
  readonly #faults = new Set<Fault & { left: number; release: Set<(err: Error) => void> }>();
  #rv = 0;

  /** Create every object of a multi-document YAML file (a fixture named after its case). */
  load(path: string): this {
    for (const doc of parseAllDocuments(readFileSync(path, "utf8"))) {
      if (doc.errors.length > 0) throw new Error(`Invalid fixture "${path}": ${doc.errors[0]!.message}`);
      const obj = doc.toJS() as KubeObject | null;
      if (obj) this.create(obj);
    }
    return this;
  }

  /** Store a new object (kind from `kind`), as a controller or the cluster would; 409 when the name is taken. */
  create(object: KubeObject, resource: Resource | string = String(object["kind"]), namespace?: string): KubeObject {
    const obj = wire(object) as Stored;
    const meta = (obj.metadata ??= {} as Stored["metadata"]);
    if (namespace) meta.namespace = namespace;
    const plural = pluralOf(resource);
    const key = keyOf(meta.namespace, meta.name);
    if (this.#store(plural).has(key)) throw this.#error(409, `${plural} "${key}" already exists`, "AlreadyExists");
    meta.uid ??= crypto.randomUUID();
    meta.creationTimestamp ??= new Date().toISOString().replace(/\.\d+Z$/, "Z");
    return this.#write(plural, "ADDED", key, obj);
  }

  /** The stored object, or undefined. */
  get(resource: string, namespace: string | undefined, name: string): KubeObject | undefined {
    const obj = this.#store(pluralOf(resource)).get(keyOf(namespace, name));
    return obj && wire(obj);
  }

  /** Every stored object of a resource. */
  items(resource: string): KubeObject[] {
    return [...this.#store(pluralOf(resource)).values()].map(wire);
  }

  /** Merge `patch` into an object, status included (the cluster changing it); 404, or 409 for a stale resourceVersion. */
  patch(resource: Resource | string, namespace: string | undefined, name: string, patch: unknown, subresource?: string): KubeObject {
    const plural = pluralOf(resource);
    const key = keyOf(namespace, name);
    const old = this.#store(plural).get(key);
    if (!old) throw this.#error(404, `${plural} "${key}" not found`);
    const merged = mergePatch(old, wire(patch)) as Stored;
    if (merged.metadata.resourceVersion !== old.metadata.resourceVersion) {
      throw this.#error(409, `Operation cannot be fulfilled on ${plural} "${key}": the object has been modified`);
    }
    let next: Stored = merged;
    if (subresource === "status") next = { ...old, status: merged["status"] };
    else if (subresource !== undefined) throw new Error(`FakeKube has no subresource "${subresource}"`);
    if (next["status"] === undefined) delete next["status"];
    if (Bun.deepEquals(next, old)) return wire(old); // A no-op: no new version, no watch event.
    return this.#write(plural, "MODIFIED", key, next);
  }

  /** Delete an object (a DELETED watch event); 404 when absent. */
  remove(resource: string, namespace: string | undefined, name: string): void {
    const plural = pluralOf(resource);
    const key = keyOf(namespace, name);
    const old = this.#store(plural).get(key);
    if (!old) throw this.#error(404, `${plural} "${key}" not found`);
    this.#store(plural).delete(key);
    this.#write(plural, "DELETED", key, old);
  }

  /**
   * Fail the next `count` matching calls (`Infinity`: until disposed). Disposing ends the fault; calls it holds
   * hung then fail with no status, as a request that timed out.
   */
  failNext(count: number, fault: Fault = {}): Disposable {
    const f = { ...fault, left: count, release: new Set<(err: Error) => void>() };
    this.#faults.add(f);
    return {
      [Symbol.dispose]: () => {
        this.#faults.delete(f);
        for (const fail of f.release) fail(new KubeApiError("No answer from the fake API server", { operation: "fake" }));
      },
    };
  }

  /** A client acting as `user` (recorded on each call). */
  client(user = "client"): ControllerClient {
    const call = <T>(c: Omit<FakeCall, "user">, answer: () => T, signal?: AbortSignal) => this.#call({ user, ...c }, answer, signal);
    return {
      get: (r, ns, name) =>
        call({ verb: "get", resource: pluralOf(r), namespace: ns, name }, () => {
          const obj = this.get(pluralOf(r), ns, name);
          if (!obj) throw this.#error(404, `${pluralOf(r)} "${keyOf(ns, name)}" not found`);
          return obj;
        }),
      create: (r, obj, ns) => call({ verb: "create", resource: pluralOf(r), namespace: ns, body: wire(obj) }, () => this.create(obj, r, ns)),
      patch: (r, ns, name, body, o: MergePatchOptions = {}) =>
        call({ verb: "patch", resource: pluralOf(r), subresource: o.subresource, namespace: ns, name, body: wire(body) }, () =>
          o.subresource === "status" || !["services", "nodes"].includes(pluralOf(r))
            ? this.patch(r, ns, name, body, o.subresource)
            : this.patch(r, ns, name, { ...(body as object), status: undefined }), // The main resource's patch leaves status alone.
        ),
      list: (r, o: ListOptions = {}) =>
        call(
          { verb: "list", resource: pluralOf(r), namespace: o.namespace },
          () => ({ items: this.items(pluralOf(r)).filter((obj) => matches(obj, o)), resourceVersion: String(this.#rv) }),
          o.signal,
        ),
      watch: (r, o: WatchOptions = {}) => this.#watch(user, pluralOf(r), o),
    };
  }

  /** Record a call, apply a matching fault, answer; the status answered is recorded. */
  async #call<T>(c: FakeCall, answer: () => T, signal?: AbortSignal): Promise<T> {
    this.calls.push(c);
    try {
      await this.#fault(c, signal);
      const out = answer();
      c.status = c.verb === "create" ? 201 : 200;
      return out;
    } catch (err) {
      c.status = err instanceof KubeApiError ? err.status : undefined;
      throw err;
    }
  }

  async *#watch(user: string, resource: string, o: WatchOptions): AsyncGenerator<WatchEvent, void, undefined> {
    await this.#call({ user, verb: "watch", resource, namespace: o.namespace }, () => {}, o.signal);
    o.onOpen?.();
    const from = o.resourceVersion ? Number(o.resourceVersion) : this.#rv;
    let i = this.#changes.findIndex((ch) => ch.rv > from);
    if (i < 0) i = this.#changes.length;
    for (;;) {
      o.signal?.throwIfAborted();
      const change = this.#changes[i];
      if (!change) {
        await this.#changed(o.signal);
        continue;
      }
      i++;
      if (change.resource === resource && matches(change.event.object, o)) yield wire(change.event);
    }
  }

  /** Resolves at the next change; rejects with the abort reason. */
  #changed(signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      const onAbort = () => (this.#wake.delete(wake), reject(signal!.reason));
      const wake = () => (signal?.removeEventListener("abort", onAbort), resolve());
      this.#wake.add(wake);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  async #fault(c: FakeCall, signal: AbortSignal | undefined): Promise<void> {
    const f = [...this.#faults].find((x) => x.left > 0 && (x.match?.(c) ?? true));
    if (!f) return;
    f.left--;
    if (!f.hang) throw this.#error(f.status ?? 500, `injected fault for "${c.verb} ${c.resource}"`);
    await new Promise<never>((_, reject) => {
      f.release.add(reject);
      signal?.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
  }

  #write(resource: string, type: WatchEvent["type"], key: string, obj: Stored): KubeObject {
    const rv = ++this.#rv;
    const stored = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(rv) } };
    if (type !== "DELETED") this.#store(resource).set(key, stored);
    this.#changes.push({ rv, resource, event: { type, object: wire(stored) } });
    for (const wake of this.#wake) wake();
    this.#wake.clear();
    return wire(stored);
  }

  #store(resource: string): Map<string, Stored> {
    let m = this.#objects.get(resource);
    if (!m) this.#objects.set(resource, (m = new Map()));
    return m;
  }

  #error(status: number, detail: string, reason = reasons[status]): KubeApiError {
    return new KubeApiError(`API server answered ${status} ${reason ?? ""}: ${detail}`, { operation: "fake", status, reason });
  }
}

/** The namespace and equality label selector (`a=b,c=d`) of a list or watch. */
function matches(obj: KubeObject, o: { namespace?: string | undefined; labelSelector?: string | undefined }): boolean {
  const meta = obj["metadata"] as { namespace?: string; labels?: Record<string, string> };
  if (o.namespace && meta.namespace !== o.namespace) return false;
  if (!o.labelSelector) return true;
  return o.labelSelector.split(",").every((req) => {
    const [k, v] = req.split("=") as [string, string | undefined];
    if (v === undefined) throw new Error(`FakeKube supports equality label selectors only, not "${req}"`);
    return meta.labels?.[k.trim()] === v.trim();
  });
}
