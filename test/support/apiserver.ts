/**
 * A faithful, in-process test double of kube-apiserver for the resources kubegate reads.
 *
 * It speaks the real wire protocol over real sockets (HTTPS with a throwaway CA and optional mTLS, or plain
 * HTTP): discovery, LIST with `limit`/`continue` over consistent snapshots, WATCH with history replay,
 * bookmarks, `410 Expired` after compaction (in-stream or as HTTP status), GET/POST/PUT/PATCH/DELETE with
 * optimistic concurrency and the `/status` subresource, Status errors, bearer tokens and an authorizer
 * hook. Controls (drop/stall watches, down/up, compact, fail the next requests) let tests break it on
 * purpose; they are methods here and `POST /_control/<name>` over HTTP for the process mode
 * (`apiserver-main.ts`).
 *
 * Writes are decoded, defaulted and validated like kube-apiserver does for the kinds kubegate writes (core/v1
 * and events.k8s.io/v1 Events, Leases, Service status) and for EndpointSlices (test/support/api-validation.ts):
 * a refused write is the same 400 or 422 Invalid Status a real server answers, through HTTP and through the
 * in-process methods alike, so a test cannot stage a state a real cluster would refuse.
 *
 * Known differences from kube-apiserver (deliberate): core/v1 and events.k8s.io/v1 Events are stored
 * separately (no cross-version conversion); strategic merge patch is applied as a JSON merge patch (lists
 * are replaced, not merged by key); server-side apply is a merge patch that creates when absent; no
 * finalizers, no deletionTimestamp, no generation, no managedFields; JSON only (protobuf is not offered).
 * Client certificates are checked by TLS only; the user of a cert-authenticated request is the test client
 * cert's CN, `kubegate-test`. Objects are stored as written (unknown fields kept, no round trip through the Go
 * types); EndpointSlice addresses may be loopback (see api-validation.ts).
 *
 * Pods and `pods/{name}/portforward` over WebSocket (test/support/apiserver-portforward.ts): the request is
 * checked as kube-apiserver 1.35 checks it (RBAC `get` by the filter, then `create` on `pods/portforward`,
 * the pod, then "Upgrade request required"), and the WebSocket is served as the kubelet serves it
 * (`v4.channel.k8s.io`, `v4.base64.channel.k8s.io` or none), relayed to where the test says the pod's port
 * listens (`forwardPod`, or the `portForwardTarget` option). Pod IPs can be unroutable, as in kind.
 *
 * RBAC: every resource request is decided by the roles one shipped deployment binds to the gateway's
 * ServiceAccount (rendered by test/support/rbac.ts): `rbac: "edge"` by default (deploy/base's roles),
 * `rbac: "lb-controller"` for a cluster running the controller, or `rbac: "local"` (deploy/local) for a
 * gateway on a developer's machine that reaches pods through port-forward. Every identity of this server stands for that
 * ServiceAccount, so a gateway gets 403 for anything its deployment does not grant; the refusals are kept in
 * `forbidden` (test/support/gateway.ts fails a test whose gateway was refused). Objects that tests set up
 * through the in-process methods (`create`, `patch`, ...) and the controls are not requests and are not
 * checked. Tests of this server itself, which write through HTTP, pass `rbac: false`.
 *
 * @example
 * await using api = await startApiServer();
 * api.create({ apiVersion: "v1", kind: "Service", metadata: { name: "web", namespace: "default" }, spec: {} });
 * const res = await fetch(`${api.url}/api/v1/services`, { tls: { ca: api.ca, cert: api.clientCert, key: api.clientKey } });
 */
import { type IncomingMessage, type Server, type ServerResponse, STATUS_CODES, createServer as createHttpServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { parse as parseYaml } from "yaml";
import { DecodeError, type FieldError, invalidStatus, KIND_RULES, type KindRules } from "./api-validation.ts";
import {
  DEFAULT_MAX_MESSAGE_BYTES,
  checkKubeletPorts,
  KubeletError,
  negotiateProtocol,
  parsePorts,
  type PortForwardRecord,
  PortForwards,
  type PortTarget,
  requestedProtocols,
  sandboxIdOf,
  websocketAccept,
} from "./apiserver-portforward.ts";
import { testCerts } from "./certs.ts";
import { kubeconfigYaml, writeKubeconfigFile } from "./kubeconfig.ts";
import { type Deployment, gatewayPolicy, type RbacPolicy } from "./rbac.ts";

// ---------------------------------------------------------------------------------------------------------
// Public types

/** What an authorizer is asked (the attributes of a resource request, like SubjectAccessReview). */
export type { PortForwardRecord, PortTarget } from "./apiserver-portforward.ts";

/** Options of {@link TestApiServer.waitForPortForwards}. */
export interface WaitForPortForwardsOptions {
  /** Exactly `count` open streams (default: at least). */
  readonly exact?: boolean;
  /** Count every stream opened so far (`portForwardTotal`) instead of the open ones. */
  readonly total?: boolean;
  readonly timeoutMs?: number;
}

export interface AccessRequest {
  readonly verb: string;
  readonly resource: string;
  readonly group: string;
  readonly namespace?: string;
  readonly subresource?: string;
  readonly name?: string;
  /** `kubegate-test` for client-cert (or anonymous plain-HTTP) requests, `token:<n>` for the n-th token. */
  readonly user: string;
}

/** Options of {@link startApiServer}. */
export interface ApiServerOptions {
  /** Serve HTTPS with the test CA (default true). */
  tls?: boolean;
  /** Require a client certificate signed by the test CA (mTLS, checked in the handshake). Default = `tls`. */
  requireClientCert?: boolean;
  /** When set, every API request needs `Authorization: Bearer <one of tokens>` (else 401). */
  tokens?: string[];
  /** Interval of BOOKMARK events on watches that allow them (default 1000 ms; real servers use ~60 s). */
  bookmarkIntervalMs?: number;
  /** Port to listen on (default 0: ephemeral). */
  port?: number;
  /** Listen address (default 127.0.0.1). */
  hostname?: string;
  /**
   * Answer false to refuse a request with 403 Forbidden. Not asked for non-resource URLs (discovery). Asked for
   * every resource request, and checked in addition to RBAC (both must allow): it can refuse more, never grant.
   */
  authorize?: (a: AccessRequest) => boolean;
  /**
   * Enforce the roles this deployment binds to the gateway (test/support/rbac.ts) on every resource request:
   * `"edge"` (the default, also `true`; deploy/base's roles), `"base"` (the same roles) or `"lb-controller"`
   * (plus the Lease and services/status rules). False only for tests of the server itself that use verbs
   * the gateway never sends.
   */
  rbac?: boolean | Deployment;
  /** Events kept per resource for watch replay and continue tokens (default 100 000); older RVs get 410. */
  historyLimit?: number;
  /** Events a watcher may have queued and unsent before it is closed as unresponsive (default 100 000). */
  watchQueueLimit?: number;
  /** Also serve `/_control/*` on a separate plain-HTTP loopback port that stays up across `down()`. */
  controlPort?: number;
  /**
   * Enforce this NodePort range on explicit node ports too, like `--service-node-port-range`. Without it,
   * node ports are allocated from 30000-32767 but any explicit port 1-65535 is accepted (tests bind NodePorts
   * on free ephemeral ports); duplicates are refused either way.
   */
  nodePortRange?: readonly [number, number];
  /**
   * Refuse a node port another Service holds (default true, as kube-apiserver does). Set false to stage a
   * NodePort conflict, which a real cluster never lets happen, for the gateway's conflict handling.
   */
  uniqueNodePorts?: boolean;
  /**
   * Serve `pods/{name}/portforward` WebSocket upgrades (default true). False answers like a cluster behind a
   * proxy that strips `Upgrade`: 400 "Upgrade request required" to every port-forward request.
   */
  portForwardWebSockets?: boolean;
  /**
   * Where a pod's container port listens, for ports not registered with `forwardPod` (undefined: nothing
   * listens, the error channel says "connection refused").
   */
  portForwardTarget?: (pod: object, containerPort: number) => PortTarget | undefined;
  /**
   * After the pod closes its side, keep relaying the client's bytes this long before closing (containerd
   * waits up to 1000 ms for the other direction). Default 0: close at once.
   */
  portForwardLingerMs?: number;
  /**
   * What `/version` says (default "1.35.0": WebSocket port-forward needs `create` on pods/portforward since
   * 1.35, which this server enforces whatever it says). For clients that decide by the server's version.
   */
  kubernetesVersion?: string;
  /** Largest client message on a port-forward WebSocket (default 32 MiB, x/net/websocket's); more closes with 1009. */
  portForwardMaxMessageBytes?: number;
}

/** One served request, for assertions. */
export interface RequestLogEntry {
  readonly method: string;
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly status: number;
  readonly watch: boolean;
  readonly at: number;
}

/** How a watch that starts from a compacted resourceVersion is refused. */
export type WatchErrorMode = "event" | "http";

/** Options of {@link TestApiServer.failNext}. */
export interface FailNextOptions {
  /** Sent as `Retry-After` and `details.retryAfterSeconds` (default 1 for 429/503/504). */
  readonly retryAfterSeconds?: number;
  /** Only requests whose path contains this string count (and fail). */
  readonly match?: string;
  /** Only watch requests (true) or only non-watch requests (false) count. */
  readonly watch?: boolean;
}

/** Options of {@link TestApiServer.kubeconfig}. */
export interface KubeconfigOptions {
  token?: string;
  tokenFile?: string;
  exec?: { command: string; args?: string[]; env?: { name: string; value: string }[] };
  skipClientCert?: boolean;
  namespace?: string;
}

/** A running test API server. Dispose it (`await using`) to stop it. */
export interface TestApiServer extends AsyncDisposable {
  readonly url: string;
  readonly port: number;
  /** PEM texts (empty strings when `tls` is false). */
  readonly ca: string;
  readonly clientCert: string;
  readonly clientKey: string;
  /** URL of the separate control listener (when `controlPort` was given). */
  readonly controlUrl: string | undefined;
  /** kubeconfig YAML text for this server: CA + client cert (+ token, tokenFile or exec when given). */
  kubeconfig(options?: KubeconfigOptions): string;
  /** Writes kubeconfig() to a temp file and returns its path. */
  writeKubeconfig(options?: KubeconfigOptions): Promise<string>;

  /** Create an object; the resource is inferred from apiVersion/kind. Emits watch events like HTTP writes. */
  create(obj: object): object;
  /** Update (PUT semantics, conflict on a stale `metadata.resourceVersion` when one is given). */
  update(obj: object): object;
  /** JSON merge patch of one object. `resource` is a plural (`services`) or `plural.group` (`events.events.k8s.io`). */
  patch(resource: string, ns: string | undefined, name: string, patch: object): object;
  /** Update only `status` (like PUT .../status). */
  updateStatus(obj: object): object;
  remove(resource: string, ns: string | undefined, name: string): void;
  get(resource: string, ns: string | undefined, name: string): object | undefined;
  /** Current objects of one resource, sorted by namespace/name. */
  items(resource: string): object[];
  /** The current (global) resourceVersion. */
  readonly resourceVersion: string;

  /** Abort every open watch stream mid-stream (the client sees a connection error, not a clean end). */
  dropWatches(): void;
  /** While on, open watches get nothing (no events, no bookmarks); events queue and flow again when off. */
  stallWatches(on: boolean): void;
  /** Stop listening and kill every connection; requests get connection refused until `up()`. */
  down(): Promise<void>;
  /** Listen again on the same port. */
  up(): Promise<void>;
  /** Move the compaction point to the current RV; by default also ends open watches with an in-stream 410. */
  compact(options?: { notifyWatchers?: boolean }): void;
  setWatchErrorMode(mode: WatchErrorMode): void;
  /** The next `n` matching requests answer `status` with a Status body (429/503 also get Retry-After). */
  failNext(n: number, status: number, options?: FailNextOptions): void;
  /** Replace the accepted bearer tokens (undefined or [] turns token auth off). */
  setTokens(tokens: string[] | undefined): void;
  /** Replace the `authorize` option (undefined removes it; RBAC stays as configured). */
  setAuthorizer(authorize: ((a: AccessRequest) => boolean) | undefined): void;
  /** Log of served requests (controls excluded). */
  readonly requests: readonly RequestLogEntry[];
  /** The deployment whose roles are enforced (undefined with `rbac: false`). */
  readonly rbac: Deployment | undefined;
  /** Requests refused by RBAC (not by a test's `authorize`), oldest first; `clearRequests` empties it too. */
  readonly forbidden: readonly AccessRequest[];
  clearRequests(): void;
  /** Open watch streams (of one resource, e.g. `services`, or of all). */
  watchCount(resource?: string): number;
  /**
   * Resolves once at least `count` watches (of `resource`) are open — exactly `count` with `exact` (e.g.
   * `waitForWatches(0, { exact: true })` after clients went away); rejects after `timeoutMs` (default 5000).
   */
  waitForWatches(count: number, options?: { resource?: string; timeoutMs?: number; exact?: boolean }): Promise<void>;
  /** Whether the server is listening (false between `down()` and `up()`). */
  readonly isUp: boolean;

  /**
   * Relay port-forwards to `namespace/pod`'s `containerPort` to `target` (a local listener); the pod's IP
   * stays whatever the Pod object says. Registering again replaces; `target` undefined removes the route.
   * @example api.forwardPod("default", "web-1", 8080, { hostname: "127.0.0.1", port: backend.port });
   */
  forwardPod(namespace: string, pod: string, containerPort: number, target: PortTarget | undefined): void;
  /** Remove every route of one pod (its ports then refuse, like a pod whose process died). */
  unforwardPod(namespace: string, pod: string): void;
  /** Port-forward WebSockets open now. */
  readonly portForwardCount: number;
  /** Port-forward WebSockets opened since start (accepted upgrades, failed dials included). */
  readonly portForwardTotal: number;
  /** Every accepted port-forward WebSocket, oldest first (`clearRequests` does not empty it). */
  readonly portForwards: readonly PortForwardRecord[];
  /** Kill every open port-forward WebSocket and its pod connections abruptly (no close frame), like a kubelet restart. Returns how many. */
  dropPortForwards(): number;
  /** Resolves once `count` streams are open (or, with `total`, were ever opened); rejects after `timeoutMs` (default 5000). */
  waitForPortForwards(count: number, options?: WaitForPortForwardsOptions): Promise<void>;
  /** Switch WebSocket port-forward on or off at run time (see the `portForwardWebSockets` option). */
  setPortForwardWebSockets(on: boolean): void;
}

// ---------------------------------------------------------------------------------------------------------
// Objects, errors

const encoder = new TextEncoder();

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const metaOf = (o: Obj): Obj => (isObj(o["metadata"]) ? o["metadata"] : {});
const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);

/** A Kubernetes API error, carrying the `Status` object the server answers with. */
export class ApiError extends Error {
  readonly code: number;
  readonly reason: string;
  readonly details: Obj | undefined;
  readonly retryAfterSeconds: number | undefined;
  constructor(code: number, reason: string, message: string, details?: Obj, options?: ErrorOptions) {
    super(message, options);
    this.name = "ApiError";
    this.code = code;
    this.reason = reason;
    this.details = details;
    const retry = details?.["retryAfterSeconds"];
    this.retryAfterSeconds = typeof retry === "number" ? retry : undefined;
  }
  /** The `Status` object (kind Status, apiVersion v1). */
  get status(): Obj {
    return statusObject(this.code, this.reason, this.message, this.details);
  }
}

function statusObject(code: number, reason: string, message: string, details?: Obj): Obj {
  const s: Obj = { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason };
  if (details) s["details"] = details;
  s["code"] = code;
  return s;
}

const REASONS: Record<number, string> = {
  400: "BadRequest",
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  405: "MethodNotAllowed",
  406: "NotAcceptable",
  409: "Conflict",
  410: "Expired",
  415: "UnsupportedMediaType",
  422: "Invalid",
  429: "TooManyRequests",
  500: "InternalError",
  503: "ServiceUnavailable",
  504: "Timeout",
};

// ---------------------------------------------------------------------------------------------------------
// Resource table

/** Context given to a resource's defaulting hook. */
interface PrepareContext {
  readonly allocator: ServiceAllocator;
}

/** One served resource. Adding a resource is one entry in {@link RESOURCE_TYPES}. */
export interface ResourceType {
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  readonly plural: string;
  readonly singular: string;
  readonly namespaced: boolean;
  readonly shortNames?: readonly string[];
  readonly statusSubresource?: boolean;
  /** PUT of a missing object creates it (AllowCreateOnUpdate). */
  readonly createOnUpdate?: boolean;
  /** Field selectors beyond metadata.name / metadata.namespace. */
  readonly fields?: Readonly<Record<string, (o: Obj) => string | undefined>>;
  /** Defaulting/allocation on create and update (`old` set on update); throws ApiError to refuse. */
  readonly prepare?: (o: Obj, old: Obj | undefined, ctx: PrepareContext) => Obj;
  /** Release what `prepare` allocated. */
  readonly release?: (o: Obj, ctx: PrepareContext) => void;
  /** Connect subresources (`pods/portforward`), listed in discovery; served by their own handlers. */
  readonly connectSubresources?: readonly { readonly name: string; readonly kind: string; readonly verbs: readonly string[] }[];
}

const path = (o: Obj, ...keys: string[]): unknown => {
  let cur: unknown = o;
  for (const k of keys) cur = isObj(cur) ? cur[k] : undefined;
  return cur;
};
const fieldStr = (v: unknown): string | undefined =>
  typeof v === "string" ? v : typeof v === "boolean" || typeof v === "number" ? String(v) : undefined;

/** The resources the test server serves. */
export const RESOURCE_TYPES: readonly ResourceType[] = [
  {
    group: "",
    version: "v1",
    kind: "Service",
    plural: "services",
    singular: "service",
    namespaced: true,
    shortNames: ["svc"],
    statusSubresource: true,
    fields: { "spec.clusterIP": (o) => fieldStr(path(o, "spec", "clusterIP")), "spec.type": (o) => fieldStr(path(o, "spec", "type")) },
    prepare: (o, old, ctx) => ctx.allocator.prepareService(o, old),
    release: (o, ctx) => ctx.allocator.releaseService(o),
  },
  {
    group: "discovery.k8s.io",
    version: "v1",
    kind: "EndpointSlice",
    plural: "endpointslices",
    singular: "endpointslice",
    namespaced: true,
    fields: { addressType: (o) => fieldStr(o["addressType"]) },
  },
  {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    namespaced: false,
    shortNames: ["no"],
    statusSubresource: true,
    fields: { "spec.unschedulable": (o) => fieldStr(path(o, "spec", "unschedulable") ?? false) },
  },
  {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    namespaced: true,
    shortNames: ["po"],
    statusSubresource: true,
    connectSubresources: [{ name: "portforward", kind: "PodPortForwardOptions", verbs: ["create", "get"] }],
    fields: {
      "spec.nodeName": (o) => fieldStr(path(o, "spec", "nodeName")) ?? "",
      "spec.restartPolicy": (o) => fieldStr(path(o, "spec", "restartPolicy")),
      "spec.serviceAccountName": (o) => fieldStr(path(o, "spec", "serviceAccountName")),
      "status.phase": (o) => fieldStr(path(o, "status", "phase")),
      "status.podIP": (o) => fieldStr(path(o, "status", "podIP")),
    },
  },
  {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    namespaced: true,
    createOnUpdate: true,
  },
  {
    group: "events.k8s.io",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    namespaced: true,
    shortNames: ["ev"],
    createOnUpdate: true,
    fields: {
      reason: (o) => fieldStr(o["reason"]),
      type: (o) => fieldStr(o["type"]),
      "regarding.kind": (o) => fieldStr(path(o, "regarding", "kind")),
      "regarding.name": (o) => fieldStr(path(o, "regarding", "name")),
      "regarding.namespace": (o) => fieldStr(path(o, "regarding", "namespace")),
      reportingController: (o) => fieldStr(o["reportingController"]),
    },
  },
  {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    namespaced: true,
    shortNames: ["ev"],
    createOnUpdate: true,
    fields: {
      reason: (o) => fieldStr(o["reason"]),
      type: (o) => fieldStr(o["type"]),
      source: (o) => fieldStr(path(o, "source", "component")),
      "involvedObject.kind": (o) => fieldStr(path(o, "involvedObject", "kind")),
      "involvedObject.name": (o) => fieldStr(path(o, "involvedObject", "name")),
      "involvedObject.namespace": (o) => fieldStr(path(o, "involvedObject", "namespace")),
      "involvedObject.uid": (o) => fieldStr(path(o, "involvedObject", "uid")),
    },
  },
];

const apiVersionOf = (t: ResourceType): string => (t.group ? `${t.group}/${t.version}` : t.version);
const qualified = (t: ResourceType): string => (t.group ? `${t.plural}.${t.group}` : t.plural);
const detailsOf = (t: ResourceType, name?: string): Obj => ({
  ...(name !== undefined ? { name } : {}),
  ...(t.group ? { group: t.group } : {}),
  kind: t.plural,
});
const keyOf = (ns: string | undefined, name: string): string => (ns ? `${ns}/${name}` : name);
const rulesOf = (t: ResourceType): KindRules => KIND_RULES[`${apiVersionOf(t)}/${t.kind}`] ?? {};

/** 422 Invalid, as kube-apiserver answers a write that fails validation. */
function invalidError(t: ResourceType, name: string, errs: readonly FieldError[]): ApiError {
  const { message, details } = invalidStatus(t.kind, t.group, name, errs);
  return new ApiError(422, "Invalid", message, details);
}

/** Decode check of a create/update body: 400, "cannot be handled as". */
function decodeBody(t: ResourceType, o: Obj): void {
  try {
    rulesOf(t).decode?.(o);
  } catch (e) {
    if (!(e instanceof DecodeError)) throw e;
    throw new ApiError(400, "BadRequest", `${t.kind} in version "${t.version}" cannot be handled as a ${t.kind}: ${e.message}`, undefined, { cause: e });
  }
}

/** Validate a create (`old` undefined) or an update; throws 422 Invalid. */
function validateWrite(t: ResourceType, o: Obj, old: Obj | undefined, sub: "status" | undefined): void {
  const rules = rulesOf(t);
  const errs = sub === "status" ? (old && rules.validateStatus ? rules.validateStatus(o, old) : []) : (rules.validate?.(o, old) ?? []);
  if (errs.length > 0) throw invalidError(t, str(metaOf(o)["name"]) ?? "", errs);
}

// ---------------------------------------------------------------------------------------------------------
// Service defaulting: cluster IPs and node ports, like the apiserver's allocators.

class ServiceAllocator {
  /** Node port -> number of Services holding it (more than one only with `uniqueNodePorts: false`). */
  private readonly usedNodePorts = new Map<number, number>();
  private readonly usedIPs = new Set<string>();
  private nextIP = 10;
  private nextPort: number;
  /** `range` allocates; `valid` is what an explicit node port may be. */
  constructor(
    private readonly range: readonly [number, number],
    private readonly valid: readonly [number, number],
    private readonly unique: boolean,
  ) {
    this.nextPort = range[0];
  }

  prepareService(o: Obj, old: Obj | undefined): Obj {
    const spec: Obj = isObj(o["spec"]) ? { ...o["spec"] } : {};
    const oldSpec: Obj = old && isObj(old["spec"]) ? old["spec"] : {};
    const type = str(spec["type"]) ?? "ClusterIP";
    spec["type"] = type;
    spec["sessionAffinity"] ??= "None";
    const name = str(metaOf(o)["name"]) ?? "";
    const invalid = (field: string, value: unknown, detail: string): ApiError =>
      new ApiError(422, "Invalid", `Service "${name}" is invalid: ${field}: Invalid value: ${JSON.stringify(value)}: ${detail}`, {
        name,
        kind: "Service",
        causes: [{ reason: "FieldValueInvalid", message: `Invalid value: ${JSON.stringify(value)}: ${detail}`, field }],
      });
    // Keep allocated values the client left out on update (patchAllocatedValues).
    if (old && spec["clusterIP"] === undefined && oldSpec["clusterIP"] !== undefined) spec["clusterIP"] = oldSpec["clusterIP"];
    if (old && spec["clusterIPs"] === undefined && oldSpec["clusterIPs"] !== undefined) spec["clusterIPs"] = oldSpec["clusterIPs"];
    if (type !== "ExternalName") {
      if (old && oldSpec["clusterIP"] !== undefined && spec["clusterIP"] !== oldSpec["clusterIP"] && oldSpec["type"] !== "ExternalName") {
        throw invalid("spec.clusterIPs[0]", spec["clusterIP"], "may not change once set");
      }
      if (spec["clusterIP"] === undefined || spec["clusterIP"] === "") {
        spec["clusterIP"] = this.allocateIP();
      } else if (!old && spec["clusterIP"] !== "None") {
        const ip = String(spec["clusterIP"]);
        if (this.usedIPs.has(ip)) throw invalid("spec.clusterIPs", [ip], "failed to allocate IP " + ip + ": provided IP is already allocated");
        this.usedIPs.add(ip);
      }
      spec["clusterIPs"] ??= [spec["clusterIP"]];
      spec["ipFamilies"] ??= ["IPv4"];
      spec["ipFamilyPolicy"] ??= "SingleStack";
      spec["internalTrafficPolicy"] ??= "Cluster";
    }
    const external = type === "NodePort" || type === "LoadBalancer";
    if (external) spec["externalTrafficPolicy"] ??= "Cluster";
    const oldPorts = Array.isArray(oldSpec["ports"]) ? (oldSpec["ports"] as Obj[]) : [];
    const oldNodePorts = new Set(oldPorts.map((p) => p["nodePort"]).filter((n): n is number => typeof n === "number"));
    const taken: number[] = [];
    if (Array.isArray(spec["ports"])) {
      spec["ports"] = (spec["ports"] as unknown[]).map((raw, i) => {
        const p: Obj = isObj(raw) ? { ...raw } : {};
        p["protocol"] ??= "TCP";
        if (p["targetPort"] === undefined && typeof p["port"] === "number") p["targetPort"] = p["port"];
        if (external) {
          const np = p["nodePort"];
          if (np === undefined || np === 0) {
            const same = oldPorts.find((op) => op["port"] === p["port"] && (op["protocol"] ?? "TCP") === p["protocol"]);
            if (typeof same?.["nodePort"] === "number") p["nodePort"] = same["nodePort"];
            else if (spec["allocateLoadBalancerNodePorts"] !== false || type === "NodePort") p["nodePort"] = this.allocatePort(taken);
          } else if (typeof np === "number" && !oldNodePorts.has(np)) {
            if (np < this.valid[0] || np > this.valid[1]) {
              throw invalid(`spec.ports[${i}].nodePort`, np, `provided port is not in the valid range. The range of valid ports is ${this.valid[0]}-${this.valid[1]}`);
            }
            if (this.unique && (this.usedNodePorts.has(np) || taken.includes(np))) throw invalid(`spec.ports[${i}].nodePort`, np, "provided port is already allocated");
          }
          if (typeof p["nodePort"] === "number") taken.push(p["nodePort"]);
        } else {
          delete p["nodePort"];
        }
        return p;
      });
    }
    if (old) this.releaseService(old);
    for (const np of taken) this.usedNodePorts.set(np, (this.usedNodePorts.get(np) ?? 0) + 1);
    if (type !== "ExternalName" && typeof spec["clusterIP"] === "string") this.usedIPs.add(spec["clusterIP"]);
    const out: Obj = { ...o, spec };
    out["status"] ??= { loadBalancer: {} };
    // dropTypeDependentFields: "Clear the load-balancer status if it is no longer appropriate."
    if (old && type !== "LoadBalancer" && isObj(out["status"])) out["status"] = { ...out["status"], loadBalancer: {} };
    return out;
  }

  releaseService(o: Obj): void {
    const spec = isObj(o["spec"]) ? o["spec"] : {};
    if (typeof spec["clusterIP"] === "string") this.usedIPs.delete(spec["clusterIP"]);
    for (const p of Array.isArray(spec["ports"]) ? spec["ports"] : []) {
      if (!isObj(p) || typeof p["nodePort"] !== "number") continue;
      const n = (this.usedNodePorts.get(p["nodePort"]) ?? 0) - 1;
      if (n > 0) this.usedNodePorts.set(p["nodePort"], n);
      else this.usedNodePorts.delete(p["nodePort"]);
    }
  }

  private allocateIP(): string {
    for (let i = 0; i < 65_000; i++) {
      const n = this.nextIP++;
      if (this.nextIP > 65_000) this.nextIP = 10;
      const ip = `10.96.${(n >> 8) & 255}.${n & 255}`;
      if (!this.usedIPs.has(ip)) return ip;
    }
    throw new ApiError(500, "InternalError", "Internal error occurred: failed to allocate a serviceIP: range is full");
  }

  private allocatePort(taken: readonly number[]): number {
    const size = this.range[1] - this.range[0] + 1;
    for (let i = 0; i < size; i++) {
      const p = this.nextPort++;
      if (this.nextPort > this.range[1]) this.nextPort = this.range[0];
      if (!this.usedNodePorts.has(p) && !taken.includes(p)) return p;
    }
    throw new ApiError(500, "InternalError", "Internal error occurred: failed to allocate a nodePort: range is full");
  }
}

// ---------------------------------------------------------------------------------------------------------
// Selectors

type LabelRequirement = { key: string; op: "=" | "!=" | "in" | "notin" | "exists" | "!"; values: string[] };

const LABEL_KEY = String.raw`[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?`;
const LABEL_VALUE = String.raw`([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?`;
const RE_EXISTS = new RegExp(`^(!?)\\s*(${LABEL_KEY})$`);
const RE_EQ = new RegExp(`^(${LABEL_KEY})\\s*(==|=|!=)\\s*(${LABEL_VALUE})$`);
const RE_SET = new RegExp(`^(${LABEL_KEY})\\s+(in|notin)\\s*\\(([^)]*)\\)$`);

function splitTopLevel(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of s) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) {
      out.push(cur);
      cur = "";
    } else cur += ch;
  }
  out.push(cur);
  return out.map((t) => t.trim()).filter((t) => t !== "");
}

/** Parse a label selector (`a=b,c!=d,e in (f,g),!h,i`). Throws a 400 ApiError on bad syntax. */
export function parseLabelSelector(s: string): LabelRequirement[] {
  return splitTopLevel(s).map((term) => {
    let m = RE_SET.exec(term);
    if (m) {
      const values = (m[4] ?? "").split(",").map((v) => v.trim()).filter((v) => v !== "");
      return { key: m[1]!, op: m[3] as "in" | "notin", values };
    }
    m = RE_EQ.exec(term);
    if (m) return { key: m[1]!, op: m[3] === "!=" ? "!=" : "=", values: [m[4] ?? ""] };
    m = RE_EXISTS.exec(term);
    if (m) return { key: m[2]!, op: m[1] ? "!" : "exists", values: [] };
    throw new ApiError(400, "BadRequest", `unable to parse requirement: found '${term}', expected: valid label selector`);
  });
}

function labelsMatch(reqs: readonly LabelRequirement[], o: Obj): boolean {
  if (reqs.length === 0) return true;
  const labels = metaOf(o)["labels"];
  const l: Obj = isObj(labels) ? labels : {};
  for (const r of reqs) {
    const has = Object.hasOwn(l, r.key);
    const v = has ? String(l[r.key]) : undefined;
    switch (r.op) {
      case "=":
        if (v !== r.values[0]) return false;
        break;
      case "!=":
        if (v === r.values[0]) return false;
        break;
      case "in":
        if (v === undefined || !r.values.includes(v)) return false;
        break;
      case "notin":
        if (v !== undefined && r.values.includes(v)) return false;
        break;
      case "exists":
        if (!has) return false;
        break;
      case "!":
        if (has) return false;
        break;
    }
  }
  return true;
}

type FieldRequirement = { get: (o: Obj) => string | undefined; negate: boolean; value: string };

function parseFieldSelector(t: ResourceType, s: string): FieldRequirement[] {
  return splitTopLevel(s).map((term) => {
    const m = /^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
    if (!m) throw new ApiError(400, "BadRequest", `invalid field selector: '${term}'`);
    const field = m[1]!;
    const get =
      field === "metadata.name"
        ? (o: Obj) => str(metaOf(o)["name"])
        : field === "metadata.namespace"
          ? (o: Obj) => str(metaOf(o)["namespace"]) ?? ""
          : t.fields?.[field];
    if (!get) throw new ApiError(400, "BadRequest", `field label not supported: ${field}`);
    return { get, negate: m[2] === "!=", value: m[3] ?? "" };
  });
}

const fieldsMatch = (reqs: readonly FieldRequirement[], o: Obj): boolean =>
  reqs.every((r) => ((r.get(o) ?? "") === r.value) !== r.negate);

// ---------------------------------------------------------------------------------------------------------
// Patches

/** RFC 7386 merge patch (also used by the in-memory client, `fake-kube.ts`). */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return patch;
  const out: Obj = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** Strategic merge patch directives have no meaning in a merge patch: drop them. */
function stripDirectives(patch: unknown): unknown {
  if (Array.isArray(patch)) return patch.map(stripDirectives);
  if (!isObj(patch)) return patch;
  const out: Obj = {};
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith("$setElementOrder/") || k.startsWith("$deleteFromPrimitiveList/") || k === "$retainKeys" || k === "$patch") continue;
    out[k] = stripDirectives(v);
  }
  return out;
}

function jsonPointer(p: string): string[] {
  if (p === "") return [];
  if (!p.startsWith("/")) throw new ApiError(422, "Invalid", `the server rejected our request due to an error in our request: invalid JSON pointer "${p}"`);
  return p.slice(1).split("/").map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"));
}

function jsonPatch(doc: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw new ApiError(400, "BadRequest", "the server rejected our request due to an error in our request: json patch must be an array");
  let root = structuredClone(doc);
  const fail = (msg: string): never => {
    throw new ApiError(422, "Invalid", `the server rejected our request due to an error in our request: ${msg}`);
  };
  const parentOf = (ptr: string[]): [Obj | unknown[], string] => {
    let cur: unknown = root;
    for (const seg of ptr.slice(0, -1)) {
      cur = Array.isArray(cur) ? cur[Number(seg)] : isObj(cur) ? cur[seg] : undefined;
      if (cur === undefined) fail(`path "/${ptr.join("/")}" does not exist`);
    }
    if (!Array.isArray(cur) && !isObj(cur)) fail(`path "/${ptr.join("/")}" does not exist`);
    return [cur as Obj | unknown[], ptr[ptr.length - 1] ?? ""];
  };
  const getAt = (ptr: string[]): unknown => {
    let cur: unknown = root;
    for (const seg of ptr) {
      cur = Array.isArray(cur) ? cur[Number(seg)] : isObj(cur) ? cur[seg] : undefined;
      if (cur === undefined) fail(`path "/${ptr.join("/")}" does not exist`);
    }
    return cur;
  };
  const remove = (ptr: string[]): unknown => {
    const [parent, last] = parentOf(ptr);
    if (Array.isArray(parent)) {
      const i = Number(last);
      if (!(i >= 0 && i < parent.length)) fail(`index ${last} out of range`);
      return parent.splice(i, 1)[0];
    }
    if (!Object.hasOwn(parent, last)) fail(`path "/${ptr.join("/")}" does not exist`);
    const v = parent[last];
    delete parent[last];
    return v;
  };
  const add = (ptr: string[], value: unknown): void => {
    if (ptr.length === 0) {
      root = value;
      return;
    }
    const [parent, last] = parentOf(ptr);
    if (Array.isArray(parent)) {
      const i = last === "-" ? parent.length : Number(last);
      if (!(i >= 0 && i <= parent.length)) fail(`index ${last} out of range`);
      parent.splice(i, 0, value);
    } else parent[last] = value;
  };
  for (const op of ops) {
    if (!isObj(op)) fail("json patch operation must be an object");
    const o = op as Obj;
    const ptr = jsonPointer(String(o["path"] ?? ""));
    switch (o["op"]) {
      case "add":
        add(ptr, structuredClone(o["value"]));
        break;
      case "remove":
        remove(ptr);
        break;
      case "replace":
        remove(ptr);
        add(ptr, structuredClone(o["value"]));
        break;
      case "move": {
        const v = remove(jsonPointer(String(o["from"] ?? "")));
        add(ptr, v);
        break;
      }
      case "copy":
        add(ptr, structuredClone(getAt(jsonPointer(String(o["from"] ?? "")))));
        break;
      case "test":
        if (!deepEqual(getAt(ptr), o["value"])) fail(`testing value ${String(o["path"])} failed`);
        break;
      default:
        fail(`unexpected operation ${JSON.stringify(o["op"])}`);
    }
  }
  return root;
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (isObj(a) && isObj(b)) {
    const ka = Object.keys(a).filter((k) => a[k] !== undefined);
    const kb = Object.keys(b).filter((k) => b[k] !== undefined);
    return ka.length === kb.length && ka.every((k) => deepEqual(a[k], b[k]));
  }
  return false;
}

// ---------------------------------------------------------------------------------------------------------
// Store

type EventType = "ADDED" | "MODIFIED" | "DELETED";

/** One committed change. `object` is the new state (for DELETED: the last state stamped with the delete RV). */
interface StoredEvent {
  readonly type: EventType;
  readonly rv: number;
  readonly key: string;
  readonly object: Obj;
  readonly prev: Obj | undefined;
}

/** Something fed with the committed events of one resource, in order. */
interface Watcher {
  offer(ev: StoredEvent): void;
}

const jsonCache = new WeakMap<Obj, string>();
const lineCache = new WeakMap<Obj, Map<string, Uint8Array>>();

/** Encoded watch line of one event for a stored object, shared by every watcher (fan-out encodes once). */
function encodedLine(type: string, o: Obj): Uint8Array {
  let byType = lineCache.get(o);
  if (!byType) {
    byType = new Map();
    lineCache.set(o, byType);
  }
  let bytes = byType.get(type);
  if (!bytes) {
    bytes = encoder.encode(`{"type":"${type}","object":${jsonOf(o)}}\n`);
    byType.set(type, bytes);
  }
  return bytes;
}
/** JSON text of a stored (immutable) object, computed once. */
function jsonOf(o: Obj): string {
  let s = jsonCache.get(o);
  if (s === undefined) {
    s = JSON.stringify(o);
    jsonCache.set(o, s);
  }
  return s;
}

function lowerBound(keys: readonly string[], k: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (keys[mid]! < k) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
const upperBound = (keys: readonly string[], k: string): number => {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (keys[mid]! <= k) lo = mid + 1;
    else hi = mid;
  }
  return lo;
};

/** Objects and event history of one resource. */
class ResourceStore {
  readonly objects = new Map<string, Obj>();
  private sorted: string[] | null = [];
  private history: StoredEvent[] = [];
  private head = 0;
  /** RV of the newest event dropped from history (events with rv > evictedUpTo are all kept). */
  evictedUpTo = 0;
  readonly watchers = new Set<Watcher>();
  constructor(
    readonly type: ResourceType,
    private readonly historyLimit: number,
  ) {}

  sortedKeys(): string[] {
    this.sorted ??= [...this.objects.keys()].sort();
    return this.sorted;
  }

  commit(ev: StoredEvent): void {
    if (ev.type === "DELETED") this.objects.delete(ev.key);
    else this.objects.set(ev.key, ev.object);
    if (ev.type !== "MODIFIED") this.sorted = null;
    this.history.push(ev);
    if (this.history.length - this.head > this.historyLimit) {
      this.evictedUpTo = this.history[this.head]!.rv;
      this.head++;
      if (this.head > 4096 && this.head * 2 > this.history.length) {
        this.history = this.history.slice(this.head);
        this.head = 0;
      }
    }
    for (const w of this.watchers) w.offer(ev);
  }

  /** Drop history at or below `rv` (compaction). */
  compact(rv: number): void {
    let i = this.head;
    while (i < this.history.length && this.history[i]!.rv <= rv) i++;
    if (i > this.head) this.evictedUpTo = Math.max(this.evictedUpTo, this.history[i - 1]!.rv);
    this.history = this.history.slice(i);
    this.head = 0;
  }

  /** Events with rv > `rv`, oldest first (caller checked that history covers `rv`). */
  eventsSince(rv: number): StoredEvent[] {
    let lo = this.head;
    let hi = this.history.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.history[mid]!.rv <= rv) lo = mid + 1;
      else hi = mid;
    }
    return this.history.slice(lo);
  }

  /** For every key changed after `rv`: its state at `rv` (undefined = absent then). */
  stateAt(rv: number): Map<string, Obj | undefined> {
    const undo = new Map<string, Obj | undefined>();
    for (const ev of this.eventsSince(rv)) if (!undo.has(ev.key)) undo.set(ev.key, ev.prev);
    return undo;
  }
}

interface ListOptions {
  readonly namespace: string | undefined;
  readonly limit: number;
  readonly continueToken: string | undefined;
  readonly resourceVersion: string | undefined;
  readonly resourceVersionMatch: string | undefined;
  readonly labels: readonly LabelRequirement[];
  readonly fields: readonly FieldRequirement[];
}

interface ListResult {
  readonly rv: number;
  readonly items: Obj[];
  readonly continueToken: string | undefined;
  readonly remainingItemCount: number | undefined;
}

const encodeContinue = (rv: number, lastKey: string): string =>
  Buffer.from(JSON.stringify({ v: "meta.k8s.io/v1", rv, start: `${lastKey}\u0000` })).toString("base64");

function decodeContinue(token: string): { rv: number; start: string } {
  try {
    const parsed = JSON.parse(Buffer.from(token, "base64").toString("utf8")) as unknown;
    if (isObj(parsed) && parsed["v"] === "meta.k8s.io/v1" && typeof parsed["rv"] === "number" && typeof parsed["start"] === "string") {
      return { rv: parsed["rv"], start: parsed["start"].replace(/\u0000$/, "") };
    }
  } catch {
    // fall through
  }
  throw new ApiError(400, "BadRequest", "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)");
}

const TOO_OLD_CONTINUE =
  "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

function parseRV(s: string, what = "resourceVersion"): number {
  if (!/^\d+$/.test(s)) throw new ApiError(400, "BadRequest", `invalid ${what}: "${s}" is not a valid resource version`);
  return Number(s);
}

const tooLarge = (rv: number, current: number): ApiError =>
  new ApiError(504, "Timeout", `Timeout: Too large resource version: ${rv}, current: ${current}`, {
    causes: [{ reason: "ResourceVersionTooLarge", message: "Too large resource version" }],
    retryAfterSeconds: 1,
  });

/** All resources, the global resourceVersion, compaction. Pure state: no sockets. */
class Store {
  rv = 1;
  compactedRV = 0;
  readonly resources: ResourceStore[];
  private readonly byPath = new Map<string, ResourceStore>();
  private readonly byKind = new Map<string, ResourceStore>();
  readonly allocator: ServiceAllocator;

  constructor(historyLimit: number, nodePortRange: readonly [number, number] | undefined, uniqueNodePorts: boolean) {
    this.allocator = new ServiceAllocator(nodePortRange ?? [30000, 32767], nodePortRange ?? [1, 65535], uniqueNodePorts);
    this.resources = RESOURCE_TYPES.map((t) => new ResourceStore(t, historyLimit));
    for (const rs of this.resources) {
      this.byPath.set(`${rs.type.group}/${rs.type.version}/${rs.type.plural}`, rs);
      this.byKind.set(`${apiVersionOf(rs.type)}/${rs.type.kind}`, rs);
    }
  }

  lookup(group: string, version: string, plural: string): ResourceStore | undefined {
    return this.byPath.get(`${group}/${version}/${plural}`);
  }

  /** `services`, `endpointslices`, `events` (core) or `plural.group`. */
  resource(name: string): ResourceStore {
    const rs = this.resources.find((r) => qualified(r.type) === name) ?? this.resources.find((r) => r.type.plural === name && r.type.group === "") ?? this.resources.find((r) => r.type.plural === name);
    if (!rs) throw new Error(`Unknown resource "${name}": expected one of ${this.resources.map((r) => `"${qualified(r.type)}"`).join(", ")}`);
    return rs;
  }

  resourceFor(obj: Obj): ResourceStore {
    const apiVersion = str(obj["apiVersion"]);
    const kind = str(obj["kind"]);
    const rs = this.byKind.get(`${apiVersion}/${kind}`);
    if (!rs) throw new ApiError(400, "BadRequest", `no kind "${kind}" is registered for version "${apiVersion}"`);
    return rs;
  }

  floor(rs: ResourceStore): number {
    return Math.max(this.compactedRV, rs.evictedUpTo);
  }

  private write(rs: ResourceStore, type: EventType, key: string, next: Obj | undefined, prev: Obj | undefined): Obj {
    const rv = ++this.rv;
    const base = (type === "DELETED" ? prev : next)!;
    // Canonical order (apiVersion, kind first) lets a list strip them from the cached JSON text.
    const object: Obj = { apiVersion: apiVersionOf(rs.type), kind: rs.type.kind, ...base, metadata: { ...metaOf(base), resourceVersion: String(rv) } };
    rs.commit({ type, rv, key, object, prev });
    return object;
  }

  /** Check kind/apiVersion (filled in when absent) and namespace/name against the request. */
  private normalize(rs: ResourceStore, body: unknown, ns: string | undefined): Obj {
    const t = rs.type;
    if (!isObj(body)) throw new ApiError(400, "BadRequest", "the body of the request was in an unknown format - accepted media types include: application/json");
    const apiVersion = str(body["apiVersion"]) ?? apiVersionOf(t);
    const kind = str(body["kind"]) ?? t.kind;
    if (apiVersion !== apiVersionOf(t) || kind !== t.kind) {
      throw new ApiError(400, "BadRequest", `the API version in the data (${apiVersion}) does not match the expected API version (${apiVersionOf(t)}) or kind ${kind} is not ${t.kind}`);
    }
    const metadata: Obj = isObj(body["metadata"]) ? { ...body["metadata"] } : {};
    if (t.namespaced) {
      const bodyNs = str(metadata["namespace"]);
      if (ns !== undefined && bodyNs !== undefined && bodyNs !== "" && bodyNs !== ns) {
        throw new ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request");
      }
      const finalNs = ns ?? (bodyNs || "default");
      metadata["namespace"] = finalNs;
    } else delete metadata["namespace"];
    return { ...body, apiVersion, kind, metadata };
  }

  private invalidName(rs: ResourceStore, name: string): ApiError {
    return new ApiError(422, "Invalid", `${rs.type.kind} "${name}" is invalid: metadata.name: Required value: name or generateName is required`, {
      name,
      ...(rs.type.group ? { group: rs.type.group } : {}),
      kind: rs.type.kind,
      causes: [{ reason: "FieldValueRequired", message: "Required value: name or generateName is required", field: "metadata.name" }],
    });
  }

  create(rs: ResourceStore, ns: string | undefined, body: unknown, opts: { strictRV: boolean }): Obj {
    const obj = this.normalize(rs, body, ns);
    const m = metaOf(obj);
    if (str(m["resourceVersion"])) {
      if (opts.strictRV) throw new ApiError(500, "InternalError", "Internal error occurred: resourceVersion should not be set on objects to be created");
      delete m["resourceVersion"];
    }
    let name = str(m["name"]) ?? "";
    if (!name) {
      const gen = str(m["generateName"]);
      if (!gen) throw this.invalidName(rs, name);
      const alphabet = "bcdfghjklmnpqrstvwxz2456789";
      do {
        name = gen + Array.from(crypto.getRandomValues(new Uint8Array(5)), (b) => alphabet[b % alphabet.length]).join("");
      } while (rs.objects.has(keyOf(str(m["namespace"]), name)));
      m["name"] = name;
    }
    const key = keyOf(str(m["namespace"]), name);
    if (rs.objects.has(key)) {
      throw new ApiError(409, "AlreadyExists", `${qualified(rs.type)} "${name}" already exists`, detailsOf(rs.type, name));
    }
    m["uid"] = crypto.randomUUID();
    m["creationTimestamp"] = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    delete m["deletionTimestamp"];
    decodeBody(rs.type, obj);
    let prepared = rulesOf(rs.type).defaults?.(obj) ?? obj;
    validateWrite(rs.type, prepared, undefined, undefined);
    if (rs.type.prepare) prepared = rs.type.prepare(prepared, undefined, { allocator: this.allocator });
    return this.write(rs, "ADDED", key, prepared, undefined);
  }

  get(rs: ResourceStore, ns: string | undefined, name: string): Obj {
    const o = rs.objects.get(keyOf(rs.type.namespaced ? ns : undefined, name));
    if (!o) throw new ApiError(404, "NotFound", `${qualified(rs.type)} "${name}" not found`, detailsOf(rs.type, name));
    return o;
  }

  update(rs: ResourceStore, ns: string | undefined, name: string, body: unknown, sub: "status" | undefined): { object: Obj; created: boolean } {
    const obj = this.normalize(rs, body, ns);
    const m = metaOf(obj);
    const bodyName = str(m["name"]);
    if (bodyName !== name) {
      throw new ApiError(400, "BadRequest", `the name of the object (${bodyName ?? ""}) does not match the name on the URL (${name})`);
    }
    const key = keyOf(str(m["namespace"]), name);
    const old = rs.objects.get(key);
    if (!old) {
      if (rs.type.createOnUpdate && sub === undefined) {
        delete m["resourceVersion"];
        return { object: this.create(rs, ns, obj, { strictRV: false }), created: true };
      }
      throw new ApiError(404, "NotFound", `${qualified(rs.type)} "${name}" not found`, detailsOf(rs.type, name));
    }
    const om = metaOf(old);
    const rv = str(m["resourceVersion"]);
    if (rv !== undefined && rv !== "" && rv !== om["resourceVersion"]) {
      throw new ApiError(
        409,
        "Conflict",
        `Operation cannot be fulfilled on ${qualified(rs.type)} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        detailsOf(rs.type, name),
      );
    }
    const uid = str(m["uid"]);
    if (uid && uid !== om["uid"]) {
      throw new ApiError(409, "Conflict", `Operation cannot be fulfilled on ${qualified(rs.type)} "${name}": Precondition failed: UID in precondition: ${uid}, UID in object meta: ${String(om["uid"])}`, detailsOf(rs.type, name));
    }
    decodeBody(rs.type, obj);
    const rules = rulesOf(rs.type);
    let next: Obj;
    if (sub === "status") {
      // Only status changes through /status; spec and metadata changes are ignored there.
      next = { ...old, status: obj["status"] };
      next = rules.defaultsStatus?.(next) ?? next;
      validateWrite(rs.type, next, old, "status");
    } else {
      next = { ...obj, metadata: { ...m, uid: om["uid"], creationTimestamp: om["creationTimestamp"] } };
      if (rs.type.statusSubresource) {
        if (old["status"] === undefined) delete next["status"];
        else next["status"] = old["status"];
      }
      next = rules.defaults?.(next) ?? next;
      validateWrite(rs.type, next, old, undefined);
      if (rs.type.prepare) next = rs.type.prepare(next, old, { allocator: this.allocator });
    }
    const cmpNext = { ...next, metadata: { ...metaOf(next), resourceVersion: om["resourceVersion"] } };
    if (deepEqual(cmpNext, old)) return { object: old, created: false };
    return { object: this.write(rs, "MODIFIED", key, next, old), created: false };
  }

  patch(rs: ResourceStore, ns: string | undefined, name: string, kind: "merge" | "json" | "apply", patch: unknown, sub: "status" | undefined): { object: Obj; created: boolean } {
    const key = keyOf(rs.type.namespaced ? ns : undefined, name);
    const old = rs.objects.get(key);
    if (!old) {
      if (kind === "apply" && sub === undefined) {
        const body = this.normalize(rs, mergePatch({}, patch), ns);
        return { object: this.create(rs, ns, body, { strictRV: false }), created: true };
      }
      throw new ApiError(404, "NotFound", `${qualified(rs.type)} "${name}" not found`, detailsOf(rs.type, name));
    }
    const patched = kind === "json" ? jsonPatch(old, patch) : mergePatch(old, patch);
    if (!isObj(patched)) throw new ApiError(422, "Invalid", `${rs.type.kind} "${name}" is invalid: the patched object is not an object`);
    try {
      rulesOf(rs.type).decode?.(patched);
    } catch (e) {
      if (!(e instanceof DecodeError)) throw e;
      // kube-apiserver: a patched object its Go type cannot hold is a 422 on the field "patch".
      const err: FieldError = { type: "Invalid", field: "patch", value: JSON.stringify(patched), detail: e.message };
      const { message, details } = invalidStatus("", "", "", [err]);
      throw new ApiError(422, "Invalid", message, { causes: details["causes"] }, { cause: e });
    }
    const pm = metaOf(patched);
    if (pm["name"] !== name || (rs.type.namespaced && pm["namespace"] !== metaOf(old)["namespace"])) {
      throw new ApiError(422, "Invalid", `${rs.type.kind} "${name}" is invalid: metadata.name: Invalid value: the name and namespace of a patched object may not change`);
    }
    return this.update(rs, ns, name, patched, sub);
  }

  remove(rs: ResourceStore, ns: string | undefined, name: string, pre?: { uid?: string | undefined; resourceVersion?: string | undefined }): Obj {
    const old = this.get(rs, ns, name);
    const om = metaOf(old);
    if (pre?.uid && pre.uid !== om["uid"]) {
      throw new ApiError(409, "Conflict", `Operation cannot be fulfilled on ${qualified(rs.type)} "${name}": Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${String(om["uid"])}`, detailsOf(rs.type, name));
    }
    if (pre?.resourceVersion && pre.resourceVersion !== om["resourceVersion"]) {
      throw new ApiError(409, "Conflict", `Operation cannot be fulfilled on ${qualified(rs.type)} "${name}": Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${String(om["resourceVersion"])}`, detailsOf(rs.type, name));
    }
    rs.type.release?.(old, { allocator: this.allocator });
    this.write(rs, "DELETED", keyOf(rs.type.namespaced ? ns : undefined, name), undefined, old);
    return old;
  }

  /** One page of a list at a consistent snapshot. O(page + changes since the snapshot + log n). */
  list(rs: ResourceStore, o: ListOptions): ListResult {
    let snapshot = this.rv;
    let after: string | undefined;
    if (o.continueToken) {
      if (o.resourceVersion) throw new ApiError(400, "BadRequest", "specifying resource version is not allowed when using continue");
      const c = decodeContinue(o.continueToken);
      if (c.rv < this.floor(rs) || c.rv > this.rv) {
        throw new ApiError(410, "Expired", TOO_OLD_CONTINUE, undefined);
      }
      snapshot = c.rv;
      after = c.start;
    } else if (o.resourceVersion !== undefined && o.resourceVersion !== "" && o.resourceVersion !== "0") {
      const want = parseRV(o.resourceVersion);
      if (o.resourceVersionMatch === "Exact") {
        if (want > this.rv) throw tooLarge(want, this.rv);
        if (want < this.floor(rs)) throw new ApiError(410, "Expired", `too old resource version: ${want} (${this.floor(rs)})`);
        snapshot = want;
      } else if (want > this.rv) throw tooLarge(want, this.rv);
    } else if (o.resourceVersionMatch === "Exact") {
      throw new ApiError(422, "Invalid", `resourceVersionMatch: Forbidden: resourceVersionMatch "Exact" is forbidden for resourceVersion "${o.resourceVersion ?? ""}"`);
    }
    const undo = snapshot < this.rv ? rs.stateAt(snapshot) : undefined;
    const keys = rs.sortedKeys();
    const prefix = o.namespace !== undefined && rs.type.namespaced ? `${o.namespace}/` : "";
    const end = prefix ? `${o.namespace}0` : undefined; // '0' sorts right after '/'
    const inRange = (k: string): boolean => (after === undefined || k > after) && k >= prefix && (end === undefined || k < end);
    const extra = undo ? [...undo.keys()].filter(inRange).sort() : [];
    let i = after !== undefined && after >= prefix ? upperBound(keys, after) : lowerBound(keys, prefix);
    let j = 0;
    const valueAt = (k: string): Obj | undefined => (undo?.has(k) ? undo.get(k) : rs.objects.get(k));
    const next = (): string | undefined => {
      const a = i < keys.length && (end === undefined || keys[i]! < end) ? keys[i] : undefined;
      const b = extra[j];
      if (a === undefined && b === undefined) return undefined;
      if (b === undefined || (a !== undefined && a < b)) {
        i++;
        return a;
      }
      if (a === b) i++;
      j++;
      return b;
    };
    const filtered = o.labels.length > 0 || o.fields.length > 0;
    const items: Obj[] = [];
    let lastKey: string | undefined;
    for (let k = next(); k !== undefined; k = next()) {
      const v = valueAt(k);
      if (!v) continue;
      if (filtered && !(labelsMatch(o.labels, v) && fieldsMatch(o.fields, v))) continue;
      items.push(v);
      if (o.limit > 0 && items.length === o.limit) {
        lastKey = k;
        break;
      }
    }
    let more = false;
    if (lastKey !== undefined) {
      for (let k = next(); k !== undefined; k = next()) {
        if (valueAt(k)) {
          more = true;
          break;
        }
      }
    }
    let remaining: number | undefined;
    if (more && lastKey !== undefined && !filtered) {
      const hi = end === undefined ? keys.length : lowerBound(keys, end);
      remaining = hi - upperBound(keys, lastKey);
      if (undo) {
        for (const [k, atSnapshot] of undo) {
          if (!(k > lastKey && k >= prefix && (end === undefined || k < end))) continue;
          remaining += (atSnapshot ? 1 : 0) - (rs.objects.has(k) ? 1 : 0);
        }
      }
    }
    return {
      rv: snapshot,
      items,
      continueToken: more && lastKey !== undefined ? encodeContinue(snapshot, lastKey) : undefined,
      remainingItemCount: remaining,
    };
  }

  compact(): void {
    this.compactedRV = this.rv;
    for (const rs of this.resources) rs.compact(this.rv);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Watch streams

const CHUNK_BYTES = 64 * 1024;

interface WatchFilter {
  readonly namespace: string | undefined;
  readonly labels: readonly LabelRequirement[];
  readonly fields: readonly FieldRequirement[];
}

/** An entry queued on a watch stream: a ready line, or an object to serialize when sent. */
type Pending = { readonly type: string; readonly object: Obj } | { readonly line: string };

/** One open watch response. Events queue here and are enqueued to the stream as the client reads. */
class WatchStream implements Watcher {
  private controller!: ReadableStreamDefaultController<Uint8Array>;
  private pending: Pending[] = [];
  private index = 0;
  private closing = false;
  closed = false;
  private timers: ReturnType<typeof setTimeout>[] = [];
  readonly stream: ReadableStream<Uint8Array>;
  private readonly nsPrefix: string | undefined;

  constructor(
    readonly rs: ResourceStore,
    private readonly filter: WatchFilter,
    private readonly hub: WatchHub,
    readonly allowBookmarks: boolean,
    private readonly queueLimit: number,
  ) {
    this.nsPrefix = filter.namespace !== undefined && rs.type.namespaced ? `${filter.namespace}/` : undefined;
    this.stream = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.controller = c;
        },
        pull: () => this.flush(),
        cancel: () => this.cleanup(),
      },
      { highWaterMark: 256 * 1024, size: (chunk) => chunk?.byteLength ?? 0 },
    );
  }

  private matches(o: Obj | undefined): boolean {
    if (!o) return false;
    return labelsMatch(this.filter.labels, o) && fieldsMatch(this.filter.fields, o);
  }

  /** Queue the synthetic ADDED events of a snapshot (sorted objects). */
  initial(objects: Iterable<Obj>): void {
    for (const o of objects) if (this.matches(o)) this.pending.push({ type: "ADDED", object: o });
  }

  offer(ev: StoredEvent): void {
    if (this.closing) return;
    if (this.nsPrefix !== undefined && !ev.key.startsWith(this.nsPrefix)) return;
    let type: string | undefined;
    if (this.filter.labels.length === 0 && this.filter.fields.length === 0) type = ev.type;
    else if (ev.type === "ADDED") type = this.matches(ev.object) ? "ADDED" : undefined;
    else if (ev.type === "DELETED") type = this.matches(ev.prev) ? "DELETED" : undefined;
    else {
      const now = this.matches(ev.object);
      const before = this.matches(ev.prev);
      type = now && before ? "MODIFIED" : now ? "ADDED" : before ? "DELETED" : undefined;
    }
    if (type === undefined) return;
    this.pending.push({ type, object: ev.object });
    if (this.pending.length - this.index > this.queueLimit) {
      // kube-apiserver: "Forcing watcher close due to unresponsiveness" — the stream just ends.
      this.end();
      return;
    }
    this.flush();
  }

  bookmark(rv: number, annotations?: Record<string, string>): void {
    if (this.closing) return;
    const t = this.rs.type;
    const metadata: Obj = { resourceVersion: String(rv), ...(annotations ? { annotations } : {}) };
    this.pending.push({ line: `{"type":"BOOKMARK","object":${JSON.stringify({ kind: t.kind, apiVersion: apiVersionOf(t), metadata })}}\n` });
    this.flush();
  }

  /** Send an ERROR event with this Status, then end the stream. */
  fail(status: Obj): void {
    if (this.closing) return;
    this.pending.push({ line: `{"type":"ERROR","object":${JSON.stringify(status)}}\n` });
    this.closing = true;
    this.flush();
  }

  /** Enqueue queued events while the client keeps up (and the server is not stalled). */
  flush(): void {
    if (this.closed || this.hub.stalled) return;
    while (this.index < this.pending.length && (this.controller.desiredSize ?? 0) > 0) {
      const only = this.pending[this.index]!;
      if (this.index === this.pending.length - 1 && !("line" in only)) {
        this.index++;
        this.controller.enqueue(encodedLine(only.type, only.object));
        continue;
      }
      let text = "";
      while (this.index < this.pending.length && text.length < CHUNK_BYTES) {
        const p = this.pending[this.index++]!;
        text += "line" in p ? p.line : `{"type":"${p.type}","object":${jsonOf(p.object)}}\n`;
      }
      this.controller.enqueue(encoder.encode(text));
    }
    if (this.index === this.pending.length) {
      this.pending = [];
      this.index = 0;
      if (this.closing) this.end();
    } else if (this.index > 4096) {
      this.pending = this.pending.slice(this.index);
      this.index = 0;
    }
  }

  /** End the stream cleanly (what a timeout or an unresponsive watcher gets). */
  end(): void {
    if (this.closed) return;
    this.closing = true;
    try {
      this.controller.close();
    } catch {
      // already closed by the consumer
    }
    this.cleanup();
  }

  /** Break the stream: the client sees the connection fail mid-response. */
  drop(): void {
    if (this.closed) return;
    this.closing = true;
    try {
      // error(undefined): Bun resets the connection without logging an error of its own.
      this.controller.error(undefined);
    } catch {
      // already closed
    }
    this.cleanup();
  }

  addTimer(t: ReturnType<typeof setTimeout>): void {
    this.timers.push(t);
  }

  private cleanup(): void {
    if (this.closed) return;
    this.closed = true;
    this.closing = true;
    for (const t of this.timers) clearTimeout(t);
    this.rs.watchers.delete(this);
    this.hub.remove(this);
  }
}

/** Tracks open watches across resources: bookmarks, stalls, drops, waiters. */
class WatchHub {
  stalled = false;
  readonly all = new Set<WatchStream>();
  private waiters: (() => void)[] = [];
  private bookmarkTimer: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly store: Store,
    private readonly bookmarkIntervalMs: number,
  ) {}

  add(w: WatchStream): void {
    this.all.add(w);
    w.rs.watchers.add(w);
    if (w.allowBookmarks && this.bookmarkTimer === undefined) {
      this.bookmarkTimer = setInterval(() => this.tick(), this.bookmarkIntervalMs);
    }
    this.notify();
  }

  remove(w: WatchStream): void {
    this.all.delete(w);
    if (this.bookmarkTimer !== undefined && ![...this.all].some((x) => x.allowBookmarks)) {
      clearInterval(this.bookmarkTimer);
      this.bookmarkTimer = undefined;
    }
    this.notify();
  }

  private tick(): void {
    if (this.stalled) return;
    for (const w of this.all) if (w.allowBookmarks) w.bookmark(this.store.rv);
  }

  count(resource?: ResourceStore): number {
    return resource ? resource.watchers.size : this.all.size;
  }

  /** Resolve when `pred` holds (checked now and on every watch open/close). */
  until(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (pred()) return Promise.resolve();
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const check = (): void => {
      if (pred()) {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((x) => x !== check);
        resolve();
      }
    };
    const timer = setTimeout(() => {
      this.waiters = this.waiters.filter((x) => x !== check);
      reject(new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    this.waiters.push(check);
    return promise;
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  stall(on: boolean): void {
    this.stalled = on;
    if (!on) for (const w of [...this.all]) w.flush();
  }

  dropAll(): void {
    for (const w of [...this.all]) w.drop();
  }

  close(): void {
    if (this.bookmarkTimer !== undefined) clearInterval(this.bookmarkTimer);
    this.bookmarkTimer = undefined;
    this.dropAll();
  }
}

// ---------------------------------------------------------------------------------------------------------
// HTTP

const JSON_HEADERS = { "Content-Type": "application/json", "Cache-Control": "no-cache, private" };

function jsonResponse(body: unknown, status = 200, headers?: Record<string, string>): Response {
  return new Response(typeof body === "string" ? body : JSON.stringify(body), {
    status,
    headers: { ...JSON_HEADERS, "Audit-Id": crypto.randomUUID(), ...headers },
  });
}

function errorResponse(e: ApiError): Response {
  const headers: Record<string, string> = {};
  if (e.retryAfterSeconds !== undefined) headers["Retry-After"] = String(e.retryAfterSeconds);
  if (e.code === 401) headers["WWW-Authenticate"] = 'Basic realm="kubernetes-master"';
  return jsonResponse(e.status, e.code, headers);
}

/** The answer to a failed request: a Status, or the kubelet's plain text that kube-apiserver passes through. */
const failureResponse = (e: unknown): Response => (e instanceof KubeletError ? e.response() : errorResponse(toApiError(e)));

/** `namespace`/`name` of a `pods/{name}/portforward` path (segments already decoded). */
function portForwardPath(segs: readonly string[]): { namespace: string; name: string } | undefined {
  if (segs.length !== 7 || segs[0] !== "api" || segs[1] !== "v1" || segs[2] !== "namespaces" || segs[4] !== "pods" || segs[6] !== "portforward") return undefined;
  return { namespace: segs[3]!, name: segs[5]! };
}

/** Whether a request asks for a WebSocket (wsstream.IsWebSocketRequest). */
const isWebSocketRequest = (headers: Headers): boolean =>
  (headers.get("upgrade") ?? "").toLowerCase() === "websocket" && /(^|[\s,])upgrade($|[\s,])/i.test(headers.get("connection") ?? "");

/** Write a fetch Response on a raw socket (an upgrade request that is not accepted) and close it. */
async function writeRawResponse(socket: Duplex, res: Response): Promise<void> {
  const body = Buffer.from(await res.arrayBuffer());
  let head = `HTTP/1.1 ${res.status} ${STATUS_CODES[res.status] ?? ""}\r\n`;
  res.headers.forEach((v, k) => {
    if (k !== "content-length" && k !== "connection" && k !== "transfer-encoding") head += `${k}: ${v}\r\n`;
  });
  head += `Date: ${new Date().toUTCString()}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
  socket.end(Buffer.concat([Buffer.from(head, "latin1"), body]));
}

const toApiError = (e: unknown): ApiError =>
  e instanceof ApiError ? e : new ApiError(500, "InternalError", `Internal error occurred: ${e instanceof Error ? e.message : String(e)}`, undefined, { cause: e });

interface ResourceRoute {
  readonly rs: ResourceStore;
  readonly namespace: string | undefined;
  readonly name: string | undefined;
  readonly sub: string | undefined;
  readonly legacyWatch: boolean;
}

const VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

class ApiServerImpl implements TestApiServer {
  readonly store: Store;
  readonly hub: WatchHub;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private controlServer: Server | undefined;
  private tokens: string[] | undefined;
  private authorizer: ((a: AccessRequest) => boolean) | undefined;
  private readonly policy: RbacPolicy | undefined;
  readonly rbac: Deployment | undefined;
  private denied: AccessRequest[] = [];
  private watchErrorMode: WatchErrorMode = "event";
  private failures: { n: number; status: number; options: FailNextOptions }[] = [];
  private log: RequestLogEntry[] = [];
  port = 0;
  url = "";
  controlUrl: string | undefined;
  private readonly tls: boolean;
  private readonly requireClientCert: boolean;
  private readonly pf = new PortForwards();
  private pfWebSockets: boolean;

  constructor(
    private readonly options: ApiServerOptions,
    readonly ca: string,
    readonly clientCert: string,
    readonly clientKey: string,
    private readonly serverCert: string,
    private readonly serverKey: string,
    rbac: { deployment: Deployment; policy: RbacPolicy } | undefined,
  ) {
    this.rbac = rbac?.deployment;
    this.policy = rbac?.policy;
    this.tls = options.tls ?? true;
    this.requireClientCert = this.tls && (options.requireClientCert ?? this.tls);
    this.store = new Store(options.historyLimit ?? 100_000, options.nodePortRange, options.uniqueNodePorts ?? true);
    this.hub = new WatchHub(this.store, options.bookmarkIntervalMs ?? 1000);
    this.tokens = options.tokens?.length ? [...options.tokens] : undefined;
    this.authorizer = options.authorize;
    this.pfWebSockets = options.portForwardWebSockets ?? true;
  }

  // --- lifecycle -------------------------------------------------------------------------------------

  /**
   * Listen with node:http(s): unlike Bun.serve, it sends a streaming response's headers before the first
   * body byte (`flushHeaders`), as kube-apiserver does when a watch starts.
   */
  async listen(port: number): Promise<void> {
    const hostname = this.options.hostname ?? "127.0.0.1";
    const handler = (req: IncomingMessage, res: ServerResponse): void => void this.serveNode(req, res, (r) => this.handle(r));
    const server = this.tls
      ? createHttpsServer(
          { cert: this.serverCert, key: this.serverKey, ca: this.ca, requestCert: this.requireClientCert, rejectUnauthorized: this.requireClientCert },
          handler,
        )
      : createHttpServer(handler);
    server.requestTimeout = 0;
    server.headersTimeout = 30_000;
    server.on(this.tls ? "secureConnection" : "connection", (socket: Socket) => {
      this.sockets.add(socket);
      socket.once("close", () => this.sockets.delete(socket));
    });
    server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => void this.serveUpgrade(req, socket, head));
    await listenOn(server, port, hostname);
    this.server = server;
    this.port = (server.address() as { port: number }).port;
    const host = hostname.includes(":") ? `[${hostname}]` : hostname;
    this.url = `${this.tls ? "https" : "http"}://${host}:${this.port}`;
  }

  async startControl(port: number): Promise<void> {
    const server = createHttpServer((req, res) =>
      void this.serveNode(req, res, (r) => {
        const p = new URL(r.url).pathname;
        if (!p.startsWith("/_control/")) return Promise.resolve(errorResponse(new ApiError(404, "NotFound", "the server could not find the requested resource")));
        return this.control(p.slice("/_control/".length), r);
      }),
    );
    await listenOn(server, port, "127.0.0.1");
    this.controlServer = server;
    this.controlUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  }

  /** Bridge node:http to the fetch-style handler; stream bodies chunk by chunk with backpressure. */
  private async serveNode(req: IncomingMessage, res: ServerResponse, handler: (r: Request) => Promise<Response>): Promise<void> {
    let response: Response;
    try {
      const chunks: Buffer[] = [];
      if (req.method !== "GET" && req.method !== "HEAD") for await (const c of req) chunks.push(c as Buffer);
      response = await handler(this.toRequest(req, chunks.length ? Buffer.concat(chunks) : undefined));
    } catch (e) {
      response = errorResponse(toApiError(e));
    }
    const headers: Record<string, string> = {};
    response.headers.forEach((v, k) => {
      if (k !== "transfer-encoding" && k !== "content-length") headers[k] = v;
    });
    const body = response.body;
    const streaming = headers["content-type"] === "application/json" && response.headers.get("transfer-encoding") === "chunked";
    if (!body || !streaming) {
      const buf = Buffer.from(await response.arrayBuffer());
      res.writeHead(response.status, { ...headers, "Content-Length": String(buf.length) });
      res.end(buf);
      return;
    }
    res.writeHead(response.status, headers);
    res.flushHeaders();
    const reader = body.getReader();
    res.once("close", () => void reader.cancel().catch(() => {}));
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        if (!res.write(value)) await new Promise<void>((resolve) => {
          const go = (): void => {
            res.off("drain", go);
            res.off("close", go);
            resolve();
          };
          res.on("drain", go);
          res.on("close", go);
        });
        if (res.destroyed) return;
      }
      res.end();
    } catch {
      // The stream was errored on purpose (dropWatches, down): reset the connection.
      res.destroy();
      req.socket.destroy();
    }
  }

  private toRequest(req: IncomingMessage, body: Buffer | undefined): Request {
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(", ") : v);
    return new Request(`${this.tls ? "https" : "http"}://${req.headers.host ?? "localhost"}${req.url ?? "/"}`, {
      method: req.method ?? "GET",
      headers,
      ...(body ? { body: new Uint8Array(body) } : {}),
    });
  }

  /**
   * An HTTP upgrade: a `pods/{name}/portforward` WebSocket is checked like any request and then served like
   * the kubelet serves it; any other upgrade is answered as the same request without one.
   */
  private async serveUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on("error", () => {}); // the client may go away at any point
    const request = this.toRequest(req, undefined);
    const url = new URL(request.url);
    const segs = url.pathname.split("/").filter((s) => s !== "").map(decodeURIComponent);
    const route = portForwardPath(segs);
    if (!route) {
      await writeRawResponse(socket, await this.handle(request));
      return;
    }
    const log = (status: number): void => {
      this.log.push({ method: request.method, path: url.pathname, query: Object.fromEntries(url.searchParams), status, watch: false, at: Date.now() });
    };
    let accepted: { pod: Obj; ports: number[] };
    try {
      const injected = await this.injectedFailure(url, false);
      if (injected) {
        log(injected.status);
        await writeRawResponse(socket, injected);
        return;
      }
      accepted = this.portForwardRequest(request, url, route, this.authenticate(request), isWebSocketRequest(request.headers));
    } catch (e) {
      const res = failureResponse(e);
      log(res.status);
      await writeRawResponse(socket, res);
      return;
    }
    // golang.org/x/net/websocket's handshake, as the kubelet's streaming server runs it.
    if (request.method !== "GET") {
      log(405);
      socket.end("HTTP/1.1 405 Method Not Allowed\r\n\r\nbad method");
      return;
    }
    const key = req.headers["sec-websocket-key"];
    if (req.headers["sec-websocket-version"] !== "13" || typeof key !== "string" || Buffer.from(key, "base64").length !== 16) {
      log(400);
      socket.end("HTTP/1.1 400 Bad Request\r\nSec-WebSocket-Version: 13\r\n\r\nmissing or bad WebSocket Version or Key");
      return;
    }
    const protocol = negotiateProtocol(requestedProtocols(req.headers["sec-websocket-protocol"]));
    if (protocol === undefined) {
      log(403);
      socket.end("HTTP/1.1 403 Forbidden\r\n\r\n");
      return;
    }
    log(101);
    socket.write(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${websocketAccept(key)}\r\n` +
        (protocol ? `Sec-WebSocket-Protocol: ${protocol}\r\n` : "") +
        "\r\n",
    );
    const { namespace, name } = route;
    const pod = accepted.pod;
    const stream = this.pf.open(
      {
        namespace,
        pod: name,
        sandbox: sandboxIdOf(str(metaOf(pod)["uid"]) ?? name),
        protocol,
        ports: accepted.ports.map((port) => ({ port, target: this.pf.target(namespace, name, port) ?? this.options.portForwardTarget?.(structuredClone(pod), port) })),
      },
      this.options.portForwardLingerMs ?? 0,
    );
    (socket as Partial<Socket>).setNoDelay?.(true);
    stream.start(socket, head, this.options.portForwardMaxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES);
  }

  /**
   * The checks of a port-forward request, in kube-apiserver's order: RBAC for the HTTP verb (the filter),
   * the `ports` conversion, RBAC `create` (PortForwardREST.Connect, 1.35's
   * AuthorizePodWebsocketUpgradeCreatePermission), the pod, its host, the upgrade; then the kubelet's: ports
   * given and non-zero, the pod running. Returns the pod and ports of a request to accept; throws otherwise.
   */
  private portForwardRequest(req: Request, url: URL, route: { namespace: string; name: string }, user: string, websocket: boolean): { pod: Obj; ports: number[] } {
    const { namespace, name } = route;
    const rs = this.store.resource("pods");
    const verb = req.method === "POST" ? "create" : req.method === "GET" ? "get" : undefined;
    if (verb === undefined) throw new ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource");
    const access: AccessRequest = { verb, resource: "pods", subresource: "portforward", group: "", namespace, name, user };
    this.authorizeAccess(rs.type, access);
    const ports = parsePorts(url.searchParams.getAll("ports"), (m) => new ApiError(400, "BadRequest", m));
    if (verb !== "create") this.authorizeAccess(rs.type, { ...access, verb: "create" });
    const pod = this.store.get(rs, namespace, name);
    const phase = str(path(pod, "status", "phase"));
    if (!str(path(pod, "spec", "nodeName")) && (phase === undefined || phase === "Pending")) {
      throw new ApiError(400, "BadRequest", `pod ${name} does not have a host assigned`);
    }
    if (!(websocket && this.pfWebSockets)) {
      if (this.pfWebSockets && req.headers.get("upgrade")) throw new KubeletError(400, `the test API server only serves port-forward over WebSocket, not ${JSON.stringify(req.headers.get("upgrade"))}`);
      throw new ApiError(400, "BadRequest", "Upgrade request required");
    }
    checkKubeletPorts(ports);
    // The kubelet finds only running pods (GetPods(all=false)).
    if (phase !== "Running") throw new KubeletError(500, `pod not found (${JSON.stringify(`${name}_${namespace}`)})`);
    return { pod, ports };
  }

  /** RBAC (and the test's authorizer) for one request; throws kube-apiserver's 403. */
  private authorizeAccess(t: ResourceType, a: AccessRequest): void {
    if (!this.authorizer && !this.policy) return;
    // The test's authorizer first, so that it sees every request; then RBAC.
    let allowed = this.authorizer?.(a) ?? true;
    if (allowed && this.policy && !this.policy.authorize(a)) {
      allowed = false;
      this.denied.push(a);
    }
    if (allowed) return;
    const res = a.subresource ? `${t.plural}/${a.subresource}` : t.plural;
    const scope = a.namespace !== undefined ? `in the namespace "${a.namespace}"` : "at the cluster scope";
    const what = a.name !== undefined ? `${qualified(t)} "${a.name}" is forbidden` : `${qualified(t)} is forbidden`;
    throw new ApiError(403, "Forbidden", `${what}: User "${a.user}" cannot ${a.verb} resource "${res}" in API group "${t.group}" ${scope}`, detailsOf(t, a.name));
  }

  get isUp(): boolean {
    return this.server !== undefined;
  }

  async down(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    this.hub.dropAll();
    this.pf.dropAll();
    await this.closeServer(s, true);
  }

  async up(): Promise<void> {
    if (this.server) return;
    await this.listen(this.port);
  }

  private async closeServer(s: Server, killSockets: boolean): Promise<void> {
    const closed = new Promise<void>((resolve) => s.close(() => resolve()));
    s.closeAllConnections();
    if (killSockets) for (const socket of [...this.sockets]) socket.destroy();
    await closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.hub.close();
    this.pf.dropAll();
    const s = this.server;
    const c = this.controlServer;
    this.server = undefined;
    this.controlServer = undefined;
    await Promise.all([s && this.closeServer(s, true), c && this.closeServer(c, false)]);
  }

  // --- kubeconfig ------------------------------------------------------------------------------------

  kubeconfig(options: KubeconfigOptions = {}): string {
    const withCert = this.tls && !options.skipClientCert;
    return kubeconfigYaml({
      server: this.url,
      ca: this.tls ? this.ca : undefined,
      clientCert: withCert ? this.clientCert : undefined,
      clientKey: withCert ? this.clientKey : undefined,
      token: options.token,
      tokenFile: options.tokenFile,
      exec: options.exec,
      namespace: options.namespace,
    });
  }

  writeKubeconfig(options?: KubeconfigOptions): Promise<string> {
    return writeKubeconfigFile(this.kubeconfig(options));
  }

  // --- server-side object API -------------------------------------------------------------------------

  private clone = <T>(o: T): T => structuredClone(o);

  create(obj: object): object {
    const o = obj as Obj;
    const rs = this.store.resourceFor(o);
    return this.clone(this.store.create(rs, str(metaOf(o)["namespace"]), o, { strictRV: false }));
  }

  update(obj: object): object {
    const o = obj as Obj;
    const rs = this.store.resourceFor(o);
    const m = metaOf(o);
    return this.clone(this.store.update(rs, str(m["namespace"]), str(m["name"]) ?? "", o, undefined).object);
  }

  updateStatus(obj: object): object {
    const o = obj as Obj;
    const rs = this.store.resourceFor(o);
    const m = metaOf(o);
    return this.clone(this.store.update(rs, str(m["namespace"]), str(m["name"]) ?? "", o, "status").object);
  }

  patch(resource: string, ns: string | undefined, name: string, patch: object): object {
    return this.clone(this.store.patch(this.store.resource(resource), ns, name, "merge", patch, undefined).object);
  }

  remove(resource: string, ns: string | undefined, name: string): void {
    this.store.remove(this.store.resource(resource), ns, name);
  }

  get(resource: string, ns: string | undefined, name: string): object | undefined {
    const rs = this.store.resource(resource);
    const o = rs.objects.get(keyOf(rs.type.namespaced ? ns : undefined, name));
    return o ? this.clone(o) : undefined;
  }

  items(resource: string): object[] {
    const rs = this.store.resource(resource);
    return rs.sortedKeys().map((k) => this.clone(rs.objects.get(k)!));
  }

  get resourceVersion(): string {
    return String(this.store.rv);
  }

  // --- controls --------------------------------------------------------------------------------------

  dropWatches(): void {
    this.hub.dropAll();
  }

  stallWatches(on: boolean): void {
    this.hub.stall(on);
  }

  compact(options: { notifyWatchers?: boolean } = {}): void {
    this.store.compact();
    if (options.notifyWatchers ?? true) {
      const status = new ApiError(410, "Expired", "The resourceVersion for the provided watch is too old.").status;
      for (const w of [...this.hub.all]) w.fail(status);
    }
  }

  setWatchErrorMode(mode: WatchErrorMode): void {
    this.watchErrorMode = mode;
  }

  failNext(n: number, status: number, options: FailNextOptions = {}): void {
    if (n > 0) this.failures.push({ n, status, options });
  }

  setTokens(tokens: string[] | undefined): void {
    this.tokens = tokens?.length ? [...tokens] : undefined;
  }

  setAuthorizer(authorize: ((a: AccessRequest) => boolean) | undefined): void {
    this.authorizer = authorize;
  }

  get requests(): readonly RequestLogEntry[] {
    return this.log;
  }

  clearRequests(): void {
    this.log = [];
    this.denied = [];
  }

  get forbidden(): readonly AccessRequest[] {
    return this.denied;
  }

  watchCount(resource?: string): number {
    return this.hub.count(resource === undefined ? undefined : this.store.resource(resource));
  }

  waitForWatches(count: number, options: { resource?: string; timeoutMs?: number; exact?: boolean } = {}): Promise<void> {
    const rs = options.resource === undefined ? undefined : this.store.resource(options.resource);
    const ok = options.exact ? () => this.hub.count(rs) === count : () => this.hub.count(rs) >= count;
    const what = `${options.exact ? "exactly" : "at least"} ${count} open watch(es)${options.resource ? ` of "${options.resource}"` : ""} (now ${this.hub.count(rs)})`;
    return this.hub.until(ok, options.timeoutMs ?? 5000, what);
  }

  forwardPod(namespace: string, pod: string, containerPort: number, target: PortTarget | undefined): void {
    this.pf.forward(namespace, pod, containerPort, target);
  }

  unforwardPod(namespace: string, pod: string): void {
    this.pf.unforwardPod(namespace, pod);
  }

  get portForwardCount(): number {
    return this.pf.openCount;
  }

  get portForwardTotal(): number {
    return this.pf.total;
  }

  get portForwards(): readonly PortForwardRecord[] {
    return this.pf.records();
  }

  dropPortForwards(): number {
    return this.pf.dropAll();
  }

  waitForPortForwards(count: number, options: WaitForPortForwardsOptions = {}): Promise<void> {
    const n = (): number => (options.total ? this.pf.total : this.pf.openCount);
    const ok = options.exact ? () => n() === count : () => n() >= count;
    const what = () => `${options.exact ? "exactly" : "at least"} ${count} ${options.total ? "port-forward stream(s) opened in all" : "open port-forward stream(s)"} (now ${n()})`;
    return this.pf.until(ok, options.timeoutMs ?? 5000, what);
  }

  setPortForwardWebSockets(on: boolean): void {
    this.pfWebSockets = on;
  }

  /** The controls over HTTP: `POST /_control/<name>` with a JSON body. */
  private async control(name: string, req: Request): Promise<Response> {
    try {
      const text = req.method === "GET" ? "" : await req.text();
      const body: Obj = text ? (JSON.parse(text) as Obj) : {};
      const ns = str(body["namespace"]);
      const object = isObj(body["object"]) ? body["object"] : body;
      switch (name) {
        case "dropWatches":
          this.dropWatches();
          return jsonResponse({ ok: true });
        case "stallWatches":
          this.stallWatches(body["on"] !== false);
          return jsonResponse({ ok: true });
        case "down":
          // Answer first, then go down: the caller learns it worked.
          setTimeout(() => void this.down(), 10);
          return jsonResponse({ ok: true });
        case "up":
          await this.up();
          return jsonResponse({ ok: true, url: this.url });
        case "compact":
          this.compact({ notifyWatchers: body["notifyWatchers"] !== false });
          return jsonResponse({ ok: true, resourceVersion: this.resourceVersion });
        case "setWatchErrorMode": {
          const mode = body["mode"];
          if (mode !== "event" && mode !== "http") throw new ApiError(400, "BadRequest", `Invalid watch error mode ${JSON.stringify(mode)}: expected "event" or "http"`);
          this.setWatchErrorMode(mode);
          return jsonResponse({ ok: true });
        }
        case "failNext": {
          const opts: { retryAfterSeconds?: number; match?: string; watch?: boolean } = {};
          if (typeof body["retryAfterSeconds"] === "number") opts.retryAfterSeconds = body["retryAfterSeconds"];
          if (typeof body["match"] === "string") opts.match = body["match"];
          if (typeof body["watch"] === "boolean") opts.watch = body["watch"];
          this.failNext(Number(body["n"] ?? 1), Number(body["status"] ?? 500), opts);
          return jsonResponse({ ok: true });
        }
        case "setTokens":
          this.setTokens(Array.isArray(body["tokens"]) ? body["tokens"].map(String) : undefined);
          return jsonResponse({ ok: true });
        case "create":
          return jsonResponse(this.create(object), 201);
        case "update":
          return jsonResponse(this.update(object));
        case "updateStatus":
          return jsonResponse(this.updateStatus(object));
        case "patch":
          return jsonResponse(this.patch(String(body["resource"]), ns, String(body["name"]), isObj(body["patch"]) ? body["patch"] : {}));
        case "remove":
          this.remove(String(body["resource"]), ns, String(body["name"]));
          return jsonResponse({ ok: true });
        case "get": {
          const o = this.get(String(body["resource"]), ns, String(body["name"]));
          return o ? jsonResponse(o) : errorResponse(new ApiError(404, "NotFound", `${String(body["resource"])} "${String(body["name"])}" not found`));
        }
        case "items":
          return jsonResponse({ items: this.items(String(body["resource"])) });
        case "requests":
          return jsonResponse({ requests: this.log });
        case "clearRequests":
          this.clearRequests();
          return jsonResponse({ ok: true });
        case "watchCount":
          return jsonResponse({ count: this.watchCount(str(body["resource"])) });
        case "waitForWatches": {
          const opts: { resource?: string; timeoutMs?: number; exact?: boolean } = {};
          if (typeof body["resource"] === "string") opts.resource = body["resource"];
          if (typeof body["exact"] === "boolean") opts.exact = body["exact"];
          if (typeof body["timeoutMs"] === "number") opts.timeoutMs = body["timeoutMs"];
          await this.waitForWatches(Number(body["count"] ?? 1), opts);
          return jsonResponse({ ok: true });
        }
        case "forwardPod": {
          const t = isObj(body["target"]) ? body["target"] : undefined;
          this.forwardPod(String(ns), String(body["name"]), Number(body["port"]), t ? { hostname: String(t["hostname"] ?? "127.0.0.1"), port: Number(t["port"]) } : undefined);
          return jsonResponse({ ok: true });
        }
        case "unforwardPod":
          this.unforwardPod(String(ns), String(body["name"]));
          return jsonResponse({ ok: true });
        case "dropPortForwards":
          return jsonResponse({ ok: true, dropped: this.dropPortForwards() });
        case "portForwards":
          return jsonResponse({ open: this.portForwardCount, total: this.portForwardTotal, streams: this.portForwards });
        case "setPortForwardWebSockets":
          this.setPortForwardWebSockets(body["on"] !== false);
          return jsonResponse({ ok: true });
        case "state":
          return jsonResponse({ url: this.url, port: this.port, up: this.isUp, resourceVersion: this.resourceVersion, watchCount: this.watchCount(), portForwardCount: this.portForwardCount });
        default:
          throw new ApiError(404, "NotFound", `Unknown control "${name}"`);
      }
    } catch (e) {
      if (e instanceof ApiError) return errorResponse(e);
      return errorResponse(new ApiError(400, "BadRequest", e instanceof Error ? e.message : String(e), undefined, { cause: e }));
    }
  }

  // --- request handling ------------------------------------------------------------------------------

  private async handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    if (url.pathname.startsWith("/_control/")) return this.control(url.pathname.slice("/_control/".length), req);
    const q = url.searchParams;
    const watch = q.get("watch") === "1" || q.get("watch") === "true" || url.pathname.includes("/watch/");
    let res: Response;
    try {
      res = (await this.injectedFailure(url, watch)) ?? (await this.route(req, url, watch));
    } catch (e) {
      res = failureResponse(e);
    }
    this.log.push({ method: req.method, path: url.pathname, query: Object.fromEntries(q), status: res.status, watch, at: Date.now() });
    return res;
  }

  private async injectedFailure(url: URL, watch: boolean): Promise<Response | undefined> {
    const i = this.failures.findIndex(
      (f) => (f.options.match === undefined || url.pathname.includes(f.options.match)) && (f.options.watch === undefined || f.options.watch === watch),
    );
    if (i < 0) return undefined;
    const f = this.failures[i]!;
    if (--f.n <= 0) this.failures.splice(i, 1);
    const reason = REASONS[f.status] ?? "Unknown";
    const retry = f.options.retryAfterSeconds ?? (f.status === 429 || f.status === 503 || f.status === 504 ? 1 : undefined);
    const message = f.status === 429 ? "Too many requests, please try again later." : `injected failure: ${f.status} ${reason}`;
    return errorResponse(new ApiError(f.status, reason, message, retry !== undefined ? { retryAfterSeconds: retry } : undefined));
  }

  private authenticate(req: Request): string {
    if (!this.tokens) return this.tls ? "kubegate-test" : "system:anonymous";
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.get("authorization") ?? "");
    const i = m ? this.tokens.indexOf(m[1]!) : -1;
    if (i < 0) throw new ApiError(401, "Unauthorized", "Unauthorized");
    return `token:${i}`;
  }

  private async route(req: Request, url: URL, watch: boolean): Promise<Response> {
    const user = this.authenticate(req);
    const accept = req.headers.get("accept");
    if (accept && !/(application\/json|\*\/\*|application\/\*)/.test(accept)) {
      throw new ApiError(406, "NotAcceptable", `only the following media types are accepted: application/json, application/yaml`);
    }
    const segs = url.pathname.split("/").filter((s) => s !== "").map(decodeURIComponent);
    const discovery = this.discovery(segs);
    if (discovery !== undefined) {
      if (req.method !== "GET") throw new ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource");
      return jsonResponse(discovery);
    }
    const pf = portForwardPath(segs);
    if (pf) this.portForwardRequest(req, url, pf, user, false); // throws: not an upgrade
    const route = this.parseRoute(segs);
    if (!route) throw new ApiError(404, "NotFound", "the server could not find the requested resource");
    return this.serveResource(req, url, route, watch || route.legacyWatch, user);
  }

  private discovery(segs: string[]): unknown {
    const p = segs.join("/");
    if (p === "version") {
      const [major = "1", minor = "35"] = (this.options.kubernetesVersion ?? "1.35.0").split(".");
      return { major, minor, gitVersion: `v${this.options.kubernetesVersion ?? "1.35.0"}-kubegate-test`, gitCommit: "0000000000000000000000000000000000000000", gitTreeState: "clean", buildDate: "2025-01-01T00:00:00Z", goVersion: "go1.24.0", compiler: "gc", platform: "linux/amd64" };
    }
    if (p === "healthz" || p === "livez" || p === "readyz") return "ok";
    const groups = new Map<string, string[]>();
    for (const rs of this.store.resources) {
      if (!rs.type.group) continue;
      const vs = groups.get(rs.type.group) ?? [];
      if (!vs.includes(rs.type.version)) vs.push(rs.type.version);
      groups.set(rs.type.group, vs);
    }
    const groupObj = (g: string, vs: string[]): Obj => ({
      name: g,
      versions: vs.map((v) => ({ groupVersion: `${g}/${v}`, version: v })),
      preferredVersion: { groupVersion: `${g}/${vs[0]}`, version: vs[0] },
    });
    if (p === "api") {
      return { kind: "APIVersions", versions: ["v1"], serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress: `127.0.0.1:${this.port}` }] };
    }
    if (p === "apis") return { kind: "APIGroupList", apiVersion: "v1", groups: [...groups].map(([g, vs]) => groupObj(g, vs)) };
    if (segs[0] === "apis" && segs.length === 2 && groups.has(segs[1]!)) return { kind: "APIGroup", apiVersion: "v1", ...groupObj(segs[1]!, groups.get(segs[1]!)!) };
    const gv = segs[0] === "api" && segs.length === 2 && segs[1] === "v1" ? { group: "", version: "v1" } : segs[0] === "apis" && segs.length === 3 ? { group: segs[1]!, version: segs[2]! } : undefined;
    if (!gv) return undefined;
    const types = this.store.resources.map((r) => r.type).filter((t) => t.group === gv.group && t.version === gv.version);
    if (types.length === 0) return undefined;
    const resources: Obj[] = [];
    for (const t of types) {
      resources.push({
        name: t.plural,
        singularName: t.singular,
        namespaced: t.namespaced,
        kind: t.kind,
        verbs: VERBS,
        ...(t.shortNames ? { shortNames: t.shortNames } : {}),
        storageVersionHash: Buffer.from(`${t.group}/${t.version}/${t.kind}`).toString("base64").slice(0, 11),
      });
      if (t.statusSubresource) resources.push({ name: `${t.plural}/status`, singularName: "", namespaced: t.namespaced, kind: t.kind, verbs: ["get", "patch", "update"] });
      for (const c of t.connectSubresources ?? []) resources.push({ name: `${t.plural}/${c.name}`, singularName: "", namespaced: t.namespaced, kind: c.kind, verbs: c.verbs });
    }
    return { kind: "APIResourceList", apiVersion: "v1", groupVersion: gv.group ? `${gv.group}/${gv.version}` : gv.version, resources };
  }

  private parseRoute(segs: string[]): ResourceRoute | undefined {
    let rest: string[];
    let group: string;
    let version: string;
    if (segs[0] === "api" && segs.length >= 3) {
      group = "";
      version = segs[1]!;
      rest = segs.slice(2);
    } else if (segs[0] === "apis" && segs.length >= 4) {
      group = segs[1]!;
      version = segs[2]!;
      rest = segs.slice(3);
    } else return undefined;
    let legacyWatch = false;
    if (rest[0] === "watch") {
      legacyWatch = true;
      rest = rest.slice(1);
    }
    let namespace: string | undefined;
    if (rest[0] === "namespaces" && rest.length >= 3) {
      namespace = rest[1]!;
      rest = rest.slice(2);
    }
    if (rest.length < 1 || rest.length > 3) return undefined;
    const rs = this.store.lookup(group, version, rest[0]!);
    if (!rs) return undefined;
    if (namespace !== undefined && !rs.type.namespaced) return undefined;
    if (namespace === undefined && rs.type.namespaced && rest.length > 1) return undefined;
    const sub = rest[2];
    if (sub !== undefined && !(sub === "status" && rs.type.statusSubresource)) return undefined;
    return { rs, namespace, name: rest[1], sub, legacyWatch };
  }

  private async readBody(req: Request): Promise<unknown> {
    const text = await req.text();
    if (text.trim() === "") return undefined;
    const type = req.headers.get("content-type") ?? "application/json";
    try {
      return /yaml/.test(type) ? parseYaml(text) : JSON.parse(text);
    } catch (e) {
      throw new ApiError(400, "BadRequest", `the body of the request could not be decoded: ${e instanceof Error ? e.message : String(e)}`, undefined, { cause: e });
    }
  }

  private async serveResource(req: Request, url: URL, route: ResourceRoute, watch: boolean, user: string): Promise<Response> {
    const { rs, namespace, name, sub } = route;
    const t = rs.type;
    const q = url.searchParams;
    const method = req.method;
    const verb =
      method === "GET" ? (name === undefined ? (watch ? "watch" : "list") : watch ? "watch" : "get")
      : method === "POST" ? "create"
      : method === "PUT" ? "update"
      : method === "PATCH" ? "patch"
      : method === "DELETE" ? (name === undefined ? "deletecollection" : "delete")
      : undefined;
    if (verb === undefined || (sub !== undefined && !["get", "update", "patch"].includes(verb))) {
      throw new ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource");
    }
    this.authorizeAccess(t, {
      verb,
      resource: t.plural,
      group: t.group,
      user,
      ...(namespace !== undefined ? { namespace } : {}),
      ...(sub !== undefined ? { subresource: sub } : {}),
      ...(name !== undefined ? { name } : {}),
    });
    const ns = t.namespaced ? namespace : undefined;
    const subres = sub === "status" ? ("status" as const) : undefined;
    switch (verb) {
      case "get":
        return jsonResponse(jsonOf(this.store.get(rs, ns, name!)));
      case "list":
        return this.list(rs, ns, q);
      case "watch":
        return this.watch(rs, ns, name, q);
      case "create": {
        if (t.namespaced && namespace === undefined) throw new ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource");
        const created = this.store.create(rs, ns, await this.readBody(req), { strictRV: true });
        return jsonResponse(jsonOf(created), 201);
      }
      case "update": {
        const r = this.store.update(rs, ns, name!, await this.readBody(req), subres);
        return jsonResponse(jsonOf(r.object), r.created ? 201 : 200);
      }
      case "patch": {
        const type = (req.headers.get("content-type") ?? "").split(";")[0]!.trim();
        const body = await this.readBody(req);
        let r: { object: Obj; created: boolean };
        if (type === "application/merge-patch+json") r = this.store.patch(rs, ns, name!, "merge", body, subres);
        else if (type === "application/strategic-merge-patch+json") r = this.store.patch(rs, ns, name!, "merge", stripDirectives(body), subres);
        else if (type === "application/json-patch+json") r = this.store.patch(rs, ns, name!, "json", body, subres);
        else if (type === "application/apply-patch+yaml" || type === "application/apply-patch+json") {
          if (!q.get("fieldManager")) throw new ApiError(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch");
          r = this.store.patch(rs, ns, name!, "apply", body, subres);
        } else {
          throw new ApiError(415, "UnsupportedMediaType", `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json`);
        }
        return jsonResponse(jsonOf(r.object), r.created ? 201 : 200);
      }
      case "delete": {
        const body = await this.readBody(req);
        const pre = isObj(body) && isObj(body["preconditions"]) ? body["preconditions"] : {};
        const old = this.store.remove(rs, ns, name!, { uid: str(pre["uid"]), resourceVersion: str(pre["resourceVersion"]) });
        return jsonResponse(jsonOf(old));
      }
      case "deletecollection": {
        const labels = parseLabelSelector(q.get("labelSelector") ?? "");
        const fields = parseFieldSelector(t, q.get("fieldSelector") ?? "");
        const page = this.store.list(rs, { namespace: ns, limit: 0, continueToken: undefined, resourceVersion: undefined, resourceVersionMatch: undefined, labels, fields });
        const deleted = page.items.map((o) => this.store.remove(rs, str(metaOf(o)["namespace"]), str(metaOf(o)["name"])!));
        return jsonResponse(this.listBody(rs, this.store.rv, deleted, undefined, undefined));
      }
    }
    throw new ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource");
  }

  private listBody(rs: ResourceStore, rv: number, items: Obj[], continueToken: string | undefined, remaining: number | undefined): string {
    const t = rs.type;
    const metadata: Obj = { resourceVersion: String(rv) };
    if (continueToken !== undefined) metadata["continue"] = continueToken;
    if (remaining !== undefined) metadata["remainingItemCount"] = remaining;
    // Items of a typed list carry no kind/apiVersion on the wire.
    const prefix = `{"apiVersion":${JSON.stringify(apiVersionOf(t))},"kind":${JSON.stringify(t.kind)},`;
    const parts = items.map((o) => {
      const json = jsonOf(o);
      if (json.startsWith(prefix)) return `{${json.slice(prefix.length)}`;
      const { kind: _k, apiVersion: _a, ...rest } = o;
      return JSON.stringify(rest);
    });
    return `{"kind":"${t.kind}List","apiVersion":"${apiVersionOf(t)}","metadata":${JSON.stringify(metadata)},"items":[${parts.join(",")}]}`;
  }

  private list(rs: ResourceStore, ns: string | undefined, q: URLSearchParams): Response {
    const limitText = q.get("limit");
    const limit = limitText ? Number(limitText) : 0;
    if (!Number.isInteger(limit) || limit < 0) throw new ApiError(400, "BadRequest", `invalid limit: "${limitText}"`);
    const result = this.store.list(rs, {
      namespace: ns,
      limit,
      continueToken: q.get("continue") || undefined,
      resourceVersion: q.get("resourceVersion") ?? undefined,
      resourceVersionMatch: q.get("resourceVersionMatch") || undefined,
      labels: parseLabelSelector(q.get("labelSelector") ?? ""),
      fields: parseFieldSelector(rs.type, q.get("fieldSelector") ?? ""),
    });
    return jsonResponse(this.listBody(rs, result.rv, result.items, result.continueToken, result.remainingItemCount));
  }

  private watch(rs: ResourceStore, ns: string | undefined, name: string | undefined, q: URLSearchParams): Response {
    const labels = parseLabelSelector(q.get("labelSelector") ?? "");
    const fields = parseFieldSelector(rs.type, [q.get("fieldSelector") ?? "", name !== undefined ? `metadata.name=${name}` : ""].filter(Boolean).join(","));
    const rvText = q.get("resourceVersion") ?? "";
    const sendInitialEvents = q.get("sendInitialEvents") === "true";
    const allowBookmarks = q.get("allowWatchBookmarks") === "true" || q.get("allowWatchBookmarks") === "1";
    if (sendInitialEvents && (!allowBookmarks || q.get("resourceVersionMatch") !== "NotOlderThan")) {
      throw new ApiError(422, "Invalid", "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks to true");
    }
    const timeoutText = q.get("timeoutSeconds");
    const timeoutSeconds = timeoutText ? Number(timeoutText) : undefined;
    if (timeoutSeconds !== undefined && !(Number.isFinite(timeoutSeconds) && timeoutSeconds >= 0)) throw new ApiError(400, "BadRequest", `invalid timeoutSeconds: "${timeoutText}"`);
    const fromRV = rvText === "" || rvText === "0" ? undefined : parseRV(rvText);
    if (fromRV !== undefined && fromRV > this.store.rv) throw tooLarge(fromRV, this.store.rv);
    const expired = fromRV !== undefined && !sendInitialEvents && fromRV < this.store.floor(rs);
    const expiredStatus = expired ? new ApiError(410, "Expired", `too old resource version: ${fromRV} (${this.store.floor(rs)})`) : undefined;
    if (expiredStatus && this.watchErrorMode === "http") throw expiredStatus;

    const w = new WatchStream(rs, { namespace: ns, labels, fields }, this.hub, allowBookmarks, this.options.watchQueueLimit ?? 100_000);
    if (expiredStatus) {
      // Real kube-apiserver answers 200 and sends the 410 as the first (and last) event.
      w.fail(expiredStatus.status);
      return this.streamResponse(w);
    }
    if (fromRV === undefined || sendInitialEvents) {
      const keys = rs.sortedKeys();
      const prefix = ns !== undefined && rs.type.namespaced ? `${ns}/` : "";
      const start = lowerBound(keys, prefix);
      const objects: Obj[] = [];
      for (let i = start; i < keys.length && keys[i]!.startsWith(prefix); i++) objects.push(rs.objects.get(keys[i]!)!);
      w.initial(objects);
      if (sendInitialEvents) w.bookmark(this.store.rv, { "k8s.io/initial-events-end": "true" });
    } else {
      for (const ev of rs.eventsSince(fromRV)) w.offer(ev);
    }
    this.hub.add(w);
    if (timeoutSeconds !== undefined && timeoutSeconds > 0) w.addTimer(setTimeout(() => w.end(), timeoutSeconds * 1000));
    w.flush();
    return this.streamResponse(w);
  }

  private streamResponse(w: WatchStream): Response {
    return new Response(w.stream, {
      status: 200,
      headers: { ...JSON_HEADERS, "Audit-Id": crypto.randomUUID(), "Transfer-Encoding": "chunked" },
    });
  }
}

/**
 * Start a test API server (HTTPS + mTLS by default) on 127.0.0.1, enforcing the roles of the gateway's edge
 * deployment (or of `rbac`'s) unless `rbac: false`.
 */
export async function startApiServer(options: ApiServerOptions = {}): Promise<TestApiServer> {
  const tls = options.tls ?? true;
  const certs = tls ? await testCerts() : undefined;
  const impl = new ApiServerImpl(
    options,
    certs?.ca ?? "",
    certs?.clientCert ?? "",
    certs?.clientKey ?? "",
    certs?.serverCert ?? "",
    certs?.serverKey ?? "",
    options.rbac === false ? undefined : await rbacFor(options.rbac === undefined || options.rbac === true ? "edge" : options.rbac),
  );
  await impl.listen(options.port ?? 0);
  if (options.controlPort !== undefined) await impl.startControl(options.controlPort);
  return impl;
}

async function rbacFor(deployment: Deployment): Promise<{ deployment: Deployment; policy: RbacPolicy }> {
  return { deployment, policy: await gatewayPolicy(deployment) };
}

function listenOn(server: Server, port: number, hostname: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => reject(new Error(`Cannot listen on ${hostname}:${port}: ${e.message}`, { cause: e }));
    server.once("error", onError);
    server.listen(port, hostname, () => {
      server.off("error", onError);
      resolve();
    });
  });
}
