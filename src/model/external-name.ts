/**
 * The entrypoints of an ExternalName Service exposed with `kubegate.io/expose-external-name: "true"`: a
 * NodePort-typed entrypoint per `kubegate.io/external-name-ports` entry, on the node addresses, with `externalName`
 * set (the DNS target to dial) and a cluster without endpoints (the route builder resolves the name). See
 * annotations.ts for the annotations' syntax.
 */
import type { Service, ServicePort } from "../kube/objects.ts";
import { ANNOTATIONS, type ExternalNamePort } from "./annotations.ts";
import { type Exposure, claimPort } from "./claims.ts";
import { type Mutable, protocolFor, reuseEntrypoint, type ServiceCommon, withCommon } from "./entrypoint.ts";
import type { BuildContext } from "./prepared-options.ts";
import type { Cluster, Endpoint, Entrypoint, ExternalTarget } from "./types.ts";

const EMPTY_ENDPOINTS: readonly Endpoint[] = Object.freeze([]);

/** `spec.externalName` as the API server validates it: an RFC 1123 subdomain, optionally with a trailing dot. */
const DNS_NAME = /^(?=.{1,253}\.?$)[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)*\.?$/;

/** Push the entrypoints of ExternalName Service `service` onto `exposures`; problems are reported through `common`. */
export function exposeExternalName(
  service: Service,
  common: ServiceCommon,
  ctx: BuildContext,
  annotationsIn: Readonly<Record<string, string>>,
  exposures: Exposure[],
): void {
  const { key, namespace, name, annotations, parsed, report, reportAnnotation } = common;
  if (parsed.exposeExternalName !== true) return;
  const spec = service.spec;
  const hostname = spec.externalName ?? "";
  const portsKey = ANNOTATIONS.externalNamePorts.key;
  if (!DNS_NAME.test(hostname)) {
    report(`spec.externalName "${hostname}" is not a DNS name: not served`);
    return;
  }
  if (annotationsIn[portsKey] === undefined) {
    reportAnnotation(`ExternalName Service "${key}" is exposed but has no "${portsKey}" annotation to say where to listen: not served`);
    return;
  }
  const entries: readonly ExternalNamePort[] = parsed.externalNamePorts ?? [];
  const addresses = ctx.prepared.nodePortLists.get("46") ?? Object.freeze([]);
  const seen = new Set<string>();
  for (const entry of entries) {
    const ref = entry.servicePort;
    let index: number;
    if (ref === undefined) {
      if (spec.ports.length !== 1) {
        reportAnnotation(
          `Annotation "${portsKey}" on Service "${key}" gives listen port ${entry.listen} without a Service port, but the Service has ${spec.ports.length} ports: ignored`,
        );
        continue;
      }
      index = 0;
    } else {
      index = spec.ports.findIndex((p) => (typeof ref === "number" ? p.port === ref : p.name === ref));
      if (index === -1) {
        reportAnnotation(`Annotation "${portsKey}" on Service "${key}" names Service port "${ref}", which the Service does not have: ignored`);
        continue;
      }
    }
    const sp = spec.ports[index] as ServicePort;
    const portLabel = sp.name ? sp.name : String(sp.port);
    if (sp.protocol === "SCTP") {
      report(`Port "${portLabel}" uses protocol "SCTP", which kubegate does not support: skipped`);
      continue;
    }
    const epName = `${key}:${portLabel}`;
    if (seen.has(epName)) {
      reportAnnotation(`Annotation "${portsKey}" on Service "${key}" lists Service port "${portLabel}" twice: skipped the second one`);
      continue;
    }
    seen.add(epName);
    const protocol = protocolFor(sp, parsed.protocol);
    if (parsed.proxyProtocol !== undefined && protocol !== "tcp") {
      reportAnnotation(`Annotation "${ANNOTATIONS.proxyProtocol.key}" on Service "${key}" applies to TCP ports only: ignored on ${protocol} port "${portLabel}"`);
    }
    const old = common.prevClusters.get(epName);
    const cluster: Cluster =
      old && old.endpoints.length === 0 && old.serving.length === 0 && old.selection === undefined
        ? old
        : Object.freeze({ name: epName, endpoints: EMPTY_ENDPOINTS, serving: EMPTY_ENDPOINTS });
    const externalName: ExternalTarget = Object.freeze({ hostname, port: typeof sp.targetPort === "number" ? sp.targetPort : sp.port });
    const epKey = `NodePort/${epName}`;
    const fresh: Mutable<Entrypoint> = withCommon(
      {
        name: epName,
        key: epKey,
        type: "NodePort",
        protocol,
        namespace,
        service: name,
        addresses,
        port: entry.listen,
        cluster,
        externalTrafficPolicy: "Cluster",
        annotations,
        externalName,
      },
      common,
    );
    if (protocol === "tcp" && parsed.proxyProtocol !== undefined) fresh.proxyProtocol = parsed.proxyProtocol;
    exposures.push({
      entrypoint: reuseEntrypoint(fresh, common.prevByKey.get(epKey)),
      rank: { created: common.created, service: key, type: 0, index },
      claimPort: claimPort(entry.listen, protocol),
    });
  }
}
