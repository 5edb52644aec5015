/**
 * The API server as a {@link Source}: one reflector each for Services, EndpointSlices and this node's
 * own Node object (the model needs only its zone and addresses, so only it is watched, by
 * `fieldSelector=metadata.name=<node>`). They share one client, so during an API server outage they wait on its one
 * probe (`KubeClient.untilReachable`): the node sends ~1 request/s in all, not one stream of retries per kind.
 */
import { KubeClient } from "./client.ts";
import type { KubeConnection } from "./kubeconfig.ts";
import type { KindName } from "./objects.ts";
import { Reflector, type ReflectorTuning } from "./reflector.ts";
import type { Source, SourceSink, SyncStatus } from "./source.ts";

export interface ApiServerSourceOptions extends ReflectorTuning {
  /** The API server (from `loadKubeConfig`); a client is made for it and closed on dispose. */
  readonly kube?: KubeConnection | undefined;
  /** Or a ready client (left open on dispose). One of `kube` and `client` is required. */
  readonly client?: KubeClient | undefined;
  /** This node's name; without it no Node is watched. */
  readonly nodeName?: string | undefined;
  /** Watch one namespace only (default: all). */
  readonly namespace?: string | undefined;
}

/**
 * @example
 * await using source = new ApiServerSource({ kube: await loadKubeConfig(flags.kubeconfig), nodeName: "node-a", log });
 * source.start(store);
 */
export class ApiServerSource implements Source {
  readonly #options: ApiServerSourceOptions;
  readonly #client: KubeClient;
  readonly #ownsClient: boolean;
  #reflectors: Reflector[] = [];

  constructor(options: ApiServerSourceOptions) {
    this.#options = options;
    if (options.client) {
      this.#client = options.client;
      this.#ownsClient = false;
    } else if (options.kube) {
      this.#client = new KubeClient(options.kube);
      this.#ownsClient = true;
    } else {
      throw new TypeError("ApiServerSource needs a kube connection or a client");
    }
  }

  /** Start all reflectors, delivering to `sink`. Calling it again does nothing. */
  start(sink: SourceSink): void {
    if (this.#reflectors.length > 0) return;
    const { client: _c, kube: _k, nodeName, namespace, ...tuning } = this.#options;
    const client = this.#client;
    const make = (kind: KindName, extra: { namespace?: string | undefined; fieldSelector?: string | undefined }) =>
      new Reflector({ ...tuning, client, kind, sink, ...extra });
    this.#reflectors = [make("Service", { namespace }), make("EndpointSlice", { namespace })];
    if (nodeName) this.#reflectors.push(make("Node", { fieldSelector: `metadata.name=${nodeName}` }));
    // Off the cluster (`--local`) there is no Node to watch: the Nodes it would have listed are none, synced now.
    else sink.synced("Node");
    for (const r of this.#reflectors) r.start();
  }

  /** One status per watched kind. */
  status(): readonly SyncStatus[] {
    return this.#reflectors.map((r) => r.status());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.#reflectors.map((r) => r.stop()));
    if (this.#ownsClient) this.#client.close();
  }
}
