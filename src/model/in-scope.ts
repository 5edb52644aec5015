/**
 * Which Services kubegate serves at all, and which load balancers it implements:
 * - Services labelled `service.kubernetes.io/service-proxy-name: <serviceProxyName>`; with `allServices`, every
 *   Service except those labelled with another proxy name.
 * - Never ClusterIP and headless (`clusterIP: None`) Services, nor ExternalName Services unless annotated
 *   `kubegate.io/expose-external-name` (its value is checked by the ExternalName build, external-name.ts).
 * - LoadBalancer Services whose `loadBalancerClass` is unset (unless `claimUnclassedLoadBalancers` is false) or
 *   {@link LOAD_BALANCER_CLASS} get LoadBalancer entrypoints; others keep their NodePort ones.
 */
import type { Service } from "../kube/objects.ts";
import { EXPOSE_EXTERNAL_NAME_ANNOTATION } from "./annotations.ts";
import type { ModelOptions } from "./types.ts";

/** The `spec.loadBalancerClass` kubegate implements (besides an unset class). */
export const LOAD_BALANCER_CLASS = "kubegate.io/lb";
/** The label that assigns a Service to an alternative service proxy. */
export const SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name";

/** The key a Service is known by: `namespace/name`. */
export function serviceKey(service: Service): string {
  return `${service.metadata.namespace}/${service.metadata.name}`;
}

/**
 * Whether kubegate serves this Service at all (scope by proxy name label and type). An ExternalName Service is in
 * scope when it carries the `kubegate.io/expose-external-name` annotation (its value is checked by external-name.ts).
 */
export function inScope(service: Service, options: Pick<ModelOptions, "serviceProxyName" | "allServices">): boolean {
  const label = service.metadata.labels?.[SERVICE_PROXY_NAME_LABEL];
  if (options.allServices ? label !== undefined && label !== options.serviceProxyName : label !== options.serviceProxyName) {
    return false;
  }
  const { type, clusterIP } = service.spec;
  if (type === "ExternalName") return service.metadata.annotations?.[EXPOSE_EXTERNAL_NAME_ANNOTATION] !== undefined;
  if (type !== "NodePort" && type !== "LoadBalancer") return false;
  return clusterIP !== "None";
}

/** Whether kubegate implements the load balancer of this Service (of type LoadBalancer). */
export function ownsLoadBalancer(service: Service, options: Pick<ModelOptions, "claimUnclassedLoadBalancers">): boolean {
  if (service.spec.type !== "LoadBalancer") return false;
  const lbClass = service.spec.loadBalancerClass;
  return lbClass === undefined || lbClass === "" ? options.claimUnclassedLoadBalancers !== false : lbClass === LOAD_BALANCER_CLASS;
}
