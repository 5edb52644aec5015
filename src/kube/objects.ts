/**
 * valibot schemas for the Kubernetes objects kubegate reads, parsed at the edge (reflector and
 * manifest source). Only the fields kubegate uses are checked; unknown fields are kept out of the
 * output. A malformed object fails here, is reported, and never reaches the model.
 */
import * as v from "valibot";

const Str = v.string();
const OptStr = v.optional(v.string());
const Labels = v.optional(v.record(v.string(), v.string()));
const Port = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535));
const OptPort = v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(65535)));
const Protocol = v.optional(v.picklist(["TCP", "UDP", "SCTP"]), "TCP");

export const ObjectMeta = v.object({
  name: v.pipe(Str, v.minLength(1)),
  namespace: OptStr,
  uid: OptStr,
  resourceVersion: OptStr,
  creationTimestamp: OptStr,
  deletionTimestamp: OptStr,
  labels: Labels,
  annotations: Labels,
});
export type ObjectMeta = v.InferOutput<typeof ObjectMeta>;

export const ServicePort = v.object({
  name: OptStr,
  protocol: Protocol,
  appProtocol: OptStr,
  port: Port,
  targetPort: v.optional(v.union([Port, v.pipe(Str, v.minLength(1))])),
  nodePort: OptPort,
});
export type ServicePort = v.InferOutput<typeof ServicePort>;

export const LoadBalancerIngress = v.object({
  ip: OptStr,
  hostname: OptStr,
  ipMode: OptStr,
});

export const Service = v.object({
  apiVersion: v.optional(v.literal("v1")),
  kind: v.optional(v.literal("Service")),
  metadata: v.object({ ...ObjectMeta.entries, namespace: v.optional(Str, "default") }),
  spec: v.object({
    type: v.optional(v.picklist(["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]), "ClusterIP"),
    clusterIP: OptStr,
    clusterIPs: v.optional(v.array(Str)),
    ipFamilies: v.optional(v.array(v.picklist(["IPv4", "IPv6"]))),
    selector: Labels,
    ports: v.optional(v.array(ServicePort), []),
    externalIPs: v.optional(v.array(Str)),
    externalName: OptStr,
    externalTrafficPolicy: v.optional(v.picklist(["Cluster", "Local"])),
    internalTrafficPolicy: v.optional(v.picklist(["Cluster", "Local"])),
    healthCheckNodePort: OptPort,
    sessionAffinity: v.optional(v.picklist(["None", "ClientIP"])),
    sessionAffinityConfig: v.optional(
      v.object({ clientIP: v.optional(v.object({ timeoutSeconds: v.optional(v.number()) })) }),
    ),
    loadBalancerIP: OptStr,
    loadBalancerClass: OptStr,
    loadBalancerSourceRanges: v.optional(v.array(Str)),
    allocateLoadBalancerNodePorts: v.optional(v.boolean()),
    trafficDistribution: OptStr,
  }),
  status: v.optional(
    v.object({
      loadBalancer: v.optional(v.object({ ingress: v.optional(v.array(LoadBalancerIngress)) })),
    }),
  ),
});
export type Service = v.InferOutput<typeof Service>;

export const EndpointConditions = v.object({
  ready: v.optional(v.nullable(v.boolean())),
  serving: v.optional(v.nullable(v.boolean())),
  terminating: v.optional(v.nullable(v.boolean())),
});

export const Endpoint = v.object({
  addresses: v.pipe(v.array(Str), v.minLength(1)),
  conditions: v.optional(EndpointConditions, {}),
  hostname: OptStr,
  nodeName: OptStr,
  zone: OptStr,
  targetRef: v.optional(
    v.object({ kind: OptStr, name: OptStr, namespace: OptStr, uid: OptStr }),
  ),
  hints: v.optional(
    v.object({
      forZones: v.optional(v.array(v.object({ name: Str }))),
      forNodes: v.optional(v.array(v.object({ name: Str }))),
    }),
  ),
});
export type Endpoint = v.InferOutput<typeof Endpoint>;

export const EndpointPort = v.object({
  name: OptStr,
  protocol: Protocol,
  port: v.optional(Port),
  appProtocol: OptStr,
});

export const EndpointSlice = v.object({
  apiVersion: v.optional(v.literal("discovery.k8s.io/v1")),
  kind: v.optional(v.literal("EndpointSlice")),
  metadata: v.object({ ...ObjectMeta.entries, namespace: v.optional(Str, "default") }),
  addressType: v.picklist(["IPv4", "IPv6", "FQDN"]),
  endpoints: v.optional(v.nullable(v.array(Endpoint)), []),
  ports: v.optional(v.nullable(v.array(EndpointPort)), []),
});
export type EndpointSlice = v.InferOutput<typeof EndpointSlice>;

export const Node = v.object({
  apiVersion: v.optional(v.literal("v1")),
  kind: v.optional(v.literal("Node")),
  metadata: ObjectMeta,
  spec: v.optional(
    v.object({
      taints: v.optional(v.array(v.object({ key: Str, value: OptStr, effect: OptStr }))),
      unschedulable: v.optional(v.boolean()),
    }),
    {},
  ),
  status: v.optional(
    v.object({
      addresses: v.optional(v.array(v.object({ type: Str, address: Str })), []),
    }),
    {},
  ),
});
export type Node = v.InferOutput<typeof Node>;

/** The kinds kubegate watches, with their API paths. */
export const Kinds = {
  Service: { group: "", version: "v1", plural: "services", namespaced: true, schema: Service },
  EndpointSlice: {
    group: "discovery.k8s.io",
    version: "v1",
    plural: "endpointslices",
    namespaced: true,
    schema: EndpointSlice,
  },
  Node: { group: "", version: "v1", plural: "nodes", namespaced: false, schema: Node },
} as const;
export type KindName = keyof typeof Kinds;

/** `namespace/name` (or `name` for cluster-scoped objects). */
export function objectKey(meta: { readonly name: string; readonly namespace?: string | undefined }): string {
  return meta.namespace ? `${meta.namespace}/${meta.name}` : meta.name;
}

/** Parse one raw object; returns the typed object or a readable error message. */
export function parseObject<K extends KindName>(
  kind: K,
  raw: unknown,
): { ok: true; value: v.InferOutput<(typeof Kinds)[K]["schema"]> } | { ok: false; error: string } {
  const result = v.safeParse(Kinds[kind].schema as v.GenericSchema, raw);
  if (result.success) return { ok: true, value: result.output as v.InferOutput<(typeof Kinds)[K]["schema"]> };
  return { ok: false, error: v.summarize(result.issues) };
}
