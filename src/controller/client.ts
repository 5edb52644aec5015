/**
 * What the controller needs of the API client, and nothing more: the Event recorder creates and patches, the
 * lease elector also gets, the status writer only patches, the reflectors list and watch. The composition root
 * passes the real `KubeClient`, which satisfies every interface here structurally; the controller's tests pass
 * a small in-memory fake (test/support/fake-kube.ts).
 *
 * Failures are the client's: a request rejects with a `KubeApiError` whose `status` says what the API server
 * answered (404 Not Found; 409 Conflict for a stale `metadata.resourceVersion` or a name already taken; 403 ...),
 * undefined when no answer came.
 */
import type { KubeObject, ListOptions, ListResult, Resource, WatchEvent, WatchOptions } from "../kube/client.ts";

/** The only patch the controller sends: a JSON merge patch of an object or of its `status` subresource. */
export interface MergePatchOptions {
  readonly type?: "merge";
  readonly subresource?: "status";
}

/** Patches objects (the status writer: `/status` of Services, guarded by `metadata.resourceVersion`). */
export interface PatchClient {
  /** Merge `patch` into the object (409 when its `metadata.resourceVersion` is stale, 404 when it is gone). */
  patch(resource: Resource, namespace: string | undefined, name: string, patch: unknown, options?: MergePatchOptions): Promise<KubeObject>;
}

/** Creates and patches objects (the Event recorder: create an Event, count a repeat on it). */
export interface EventClient extends PatchClient {
  /** Create an object; the namespace is taken from `metadata.namespace` unless given (409 when the name is taken). */
  create(resource: Resource, object: KubeObject, namespace?: string): Promise<KubeObject>;
}

/** Reads, creates and compare-and-swaps one object (the lease elector and its Lease). */
export interface LeaseClient extends EventClient {
  /** One object (404 when there is none). */
  get(resource: Resource, namespace: string | undefined, name: string): Promise<KubeObject>;
}

/** Lists and watches a kind (the controller's reflectors). */
export interface ListWatchClient {
  list(resource: Resource, options?: ListOptions): Promise<ListResult>;
  /** Events after `options.resourceVersion` until the stream ends; rejects with the abort reason when `options.signal` aborts. */
  watch(resource: Resource, options?: WatchOptions): AsyncGenerator<WatchEvent, void, undefined>;
}

/** Everything `startLbController` uses. */
export interface ControllerClient extends LeaseClient, ListWatchClient {}
