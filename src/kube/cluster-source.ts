/**
 * The cluster as a {@link Source}: one reflector each for Services, EndpointSlices and this node's
 * own Node object (the model needs only its zone and addresses, so only it is watched).
 */
import type { KubeClient } from "./client.ts";
import type { KindName } from "./objects.ts";
import { Reflector, type ReflectorTuning } from "./reflector.ts";
import type { Source, SourceSink, SyncStatus } from "./source.ts";

export interface ClusterSourceOptions extends ReflectorTuning {
  readonly client: KubeClient;
  /** This node's name; without it no Node is watched. */
  readonly nodeName?: string | undefined;
  /** Watch one namespace only (default: all). */
  readonly namespace?: string | undefined;
}

/**
 * @example
 * await using source = new ClusterSource({ client, nodeName: "node-a" });
 * source.start(store);
 */
export class ClusterSource implements Source {
  readonly #options: ClusterSourceOptions;
  #reflectors: Reflector[] = [];

  constructor(options: ClusterSourceOptions) {
    this.#options = options;
  }

  /** Start all reflectors, delivering to `sink`. Calling it again does nothing. */
  start(sink: SourceSink): void {
    if (this.#reflectors.length > 0) return;
    const { client, nodeName, namespace, ...tuning } = this.#options;
    const make = (kind: KindName, extra: { namespace?: string | undefined; fieldSelector?: string | undefined }) =>
      new Reflector({ ...tuning, client, kind, sink, ...extra });
    this.#reflectors = [make("Service", { namespace }), make("EndpointSlice", { namespace })];
    if (nodeName) this.#reflectors.push(make("Node", { fieldSelector: `metadata.name=${nodeName}` }));
    for (const r of this.#reflectors) r.start();
  }

  /** One status per watched kind. */
  status(): readonly SyncStatus[] {
    return this.#reflectors.map((r) => r.status());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.#reflectors.map((r) => r.stop()));
  }
}
