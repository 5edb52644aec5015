/**
 * The model's options, validated and parsed once ({@link prepareOptions}), and the {@link BuildContext} every
 * Service's build reads besides its own objects (the options, this node's name and zone).
 */
import type { Node, Service } from "../kube/objects.ts";
import { ZONE_LABEL } from "./endpoints.ts";
import { cidrContains, formatIP, type IPFamily, ipSortKey, type ParsedCidr, parseCidr, parseIP } from "./net.ts";
import type { ModelOptions } from "./types.ts";

/** Options that cannot be used (not an IP, not a CIDR). */
export class ModelOptionsError extends Error {
  override name = "ModelOptionsError";
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** A host address, parsed once. */
export interface HostAddress {
  readonly address: string;
  readonly family: IPFamily;
  readonly sortKey: string;
}

/** {@link ModelOptions}, validated and parsed once. */
export interface PreparedOptions {
  readonly options: ModelOptions;
  /** Canonical host addresses. */
  readonly hostAddresses: ReadonlySet<string>;
  /** The host addresses selected by `nodePortAddresses`, sorted (IPv4 first). */
  readonly nodePortAddresses: readonly HostAddress[];
  /** Frozen address lists by family filter: "46", "4", "6". */
  readonly nodePortLists: ReadonlyMap<string, readonly string[]>;
}

/**
 * Validate and parse the model options.
 *
 * @throws {ModelOptionsError} when a host address or a `nodePortAddresses` entry is invalid.
 */
export function prepareOptions(options: ModelOptions): PreparedOptions {
  const cidrs: ParsedCidr[] = options.nodePortAddresses.map((text) => {
    const cidr = parseCidr(text);
    if (!cidr) throw new ModelOptionsError(`Invalid nodePortAddresses entry "${text}": expected a CIDR such as "10.0.0.0/8"`);
    return cidr;
  });
  const hosts = new Map<string, HostAddress>();
  for (const text of options.hostAddresses) {
    const ip = parseIP(text);
    if (!ip) throw new ModelOptionsError(`Invalid host address "${text}": expected an IPv4 or IPv6 address`);
    const address = formatIP(ip);
    hosts.set(address, { address, family: ip.family, sortKey: ipSortKey(ip) });
  }
  const sorted = [...hosts.values()].sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
  const nodePortAddresses =
    cidrs.length === 0
      ? sorted
      : sorted.filter((h) => {
          const ip = parseIP(h.address) as NonNullable<ReturnType<typeof parseIP>>;
          return cidrs.some((c) => cidrContains(c, ip));
        });
  const list = (keep: (h: HostAddress) => boolean) => Object.freeze(nodePortAddresses.filter(keep).map((h) => h.address));
  const nodePortLists = new Map<string, readonly string[]>([
    ["46", list(() => true)],
    ["4", list((h) => h.family === 4)],
    ["6", list((h) => h.family === 6)],
  ]);
  return { options, hostAddresses: new Set(hosts.keys()), nodePortAddresses, nodePortLists };
}

/** Everything a Service's build depends on besides its own objects. */
export interface BuildContext {
  readonly prepared: PreparedOptions;
  readonly nodeName: string;
  /** This node's zone, from its Node object; undefined when unknown. */
  readonly zone: string | undefined;
}

/** The zone of a Node (`topology.kubernetes.io/zone`), if any. */
export function nodeZone(node: Node | undefined): string | undefined {
  return node?.metadata.labels?.[ZONE_LABEL];
}

/** The node-port addresses of `service`: the `nodePortAddresses` host addresses, of its `ipFamilies` when set. */
export function nodePortList(service: Service, prepared: PreparedOptions): readonly string[] {
  const families = service.spec.ipFamilies;
  const familyKey =
    families && families.length > 0 ? `${families.includes("IPv4") ? "4" : ""}${families.includes("IPv6") ? "6" : ""}` : "46";
  return prepared.nodePortLists.get(familyKey) ?? NO_ADDRESSES;
}

const NO_ADDRESSES: readonly string[] = Object.freeze([]);
