/**
 * `kubegate check`: validate the config and show what the model would serve, without binding
 * anything. The objects come from the manifest files (read once with the manifest source's parser) or from one
 * list of the cluster (through the API client); the snapshot comes from the pure model with the
 * options the gateway would use. Every problem is printed; the exit code is 1 when there is any.
 *
 * @example
 * const code = await runCheck(config, { out: console.log, err: console.error });
 */
import type { Config } from "./config/flags.ts";
import { modelOptions } from "./control-plane/index.ts";
import { KubeClient } from "./kube/client.ts";
import { loadKubeConfig } from "./kube/kubeconfig.ts";
import { loadManifests } from "./kube/manifests.ts";
import { type EndpointSlice, type KindName, Kinds, type Node, objectKey, parseObject, type Service } from "./kube/objects.ts";
import type { CacheEvent } from "./kube/source.ts";
import { buildSnapshot, type InvalidObject, type ModelInput } from "./model/build.ts";
import type { Entrypoint, Snapshot } from "./model/types.ts";
import { rt } from "./runtime/index.ts";

/** The objects a check builds from, plus problems of the source itself (unreadable files, a failed list). */
export interface Collected {
  readonly input: ModelInput;
  readonly errors: readonly string[];
}

/** Objects gathered from cache events (last event per object wins, as in the model store). */
function fromEvents(events: readonly CacheEvent[]): ModelInput {
  const byId = new Map<string, CacheEvent>();
  for (const e of events) {
    if (e.type === "delete") byId.delete(`${e.kind}|${e.key}`);
    else byId.set(`${e.kind}|${e.key}`, e);
  }
  const services: Service[] = [];
  const endpointSlices: EndpointSlice[] = [];
  const nodes: Node[] = [];
  const invalid: InvalidObject[] = [];
  for (const e of byId.values()) {
    if (e.type === "invalid") invalid.push({ kind: e.kind, key: e.key, message: e.message });
    else if (e.type === "upsert") {
      if (e.kind === "Service") services.push(e.object as Service);
      else if (e.kind === "EndpointSlice") endpointSlices.push(e.object as EndpointSlice);
      else nodes.push(e.object as Node);
    }
  }
  return { services, endpointSlices, nodes, invalid };
}

/** Load manifest files once, exactly as the manifest source reads them (`loadManifests`). */
export async function collectManifests(path: string): Promise<Collected> {
  try {
    const { objects, errors } = await loadManifests(path);
    return { input: fromEvents([...objects.values()]), errors };
  } catch (err) {
    return { input: fromEvents([]), errors: [`Cannot load manifests from "${path}": ${(err as Error).message}`] };
  }
}

/** List Services, EndpointSlices and this node's Node once, with the API client the gateway uses. */
export async function collectCluster(config: Pick<Config, "kubeconfig" | "nodeName">): Promise<Collected> {
  let client: KubeClient;
  try {
    client = new KubeClient(await loadKubeConfig(config.kubeconfig), { requestTimeoutMs: 10_000 });
  } catch (err) {
    return { input: fromEvents([]), errors: [`Cannot load the kubeconfig: ${(err as Error).message}`] };
  }
  using _ = client;
  const events: CacheEvent[] = [];
  const errors: string[] = [];
  const listAll = async (kind: KindName, fieldSelector?: string) => {
    let cont: string | undefined;
    do {
      const page = await client.list(kind, { limit: 500, ...(cont ? { continue: cont } : {}), ...(fieldSelector ? { fieldSelector } : {}) });
      for (const raw of page.items) {
        const meta = (raw.metadata ?? {}) as { name?: string; namespace?: string };
        const key = objectKey({ name: meta.name ?? "<unnamed>", namespace: Kinds[kind].namespaced ? meta.namespace : undefined });
        const parsed = parseObject(kind, raw);
        events.push(parsed.ok ? ({ type: "upsert", kind, key, object: parsed.value } as CacheEvent) : { type: "invalid", kind, key, message: parsed.error });
      }
      cont = page.continue;
    } while (cont);
  };
  const lists: [KindName, string | undefined][] = [["Service", undefined], ["EndpointSlice", undefined], ["Node", `metadata.name=${config.nodeName}`]];
  for (const [kind, selector] of lists) {
    try {
      await listAll(kind, selector);
    } catch (err) {
      errors.push(`Cannot list ${Kinds[kind].plural}: ${(err as Error).message}`);
    }
  }
  return { input: fromEvents(events), errors };
}

/** What a check found. */
export interface CheckReport {
  /** `manifests "deploy/demo"` or `cluster https://...`. */
  readonly source: string;
  readonly snapshot: Snapshot | undefined;
  readonly errors: readonly string[];
  readonly warnings: readonly string[];
}

/** Build the snapshot and list every problem (pure). */
export function checkModel(source: string, collected: Collected, config: Config, hostAddresses?: readonly string[]): CheckReport {
  const errors = [...collected.errors];
  const warnings: string[] = [];
  let snapshot: Snapshot | undefined;
  try {
    const options = modelOptions(config);
    snapshot = buildSnapshot(collected.input, hostAddresses ? { ...options, hostAddresses } : options);
  } catch (err) {
    errors.push((err as Error).message);
    return { source, snapshot, errors, warnings };
  }
  for (const e of snapshot.errors) errors.push(`${e.kind} "${e.object}": ${e.message}`);
  if (![...collected.input.nodes].some((n) => n.metadata.name === config.nodeName)) {
    warnings.push(`Node "${config.nodeName}" not found: zone hints and node-local endpoints use this name (is --hostname-override right?)`);
  }
  for (const ep of snapshot.entrypoints) {
    if (ep.error) continue;
    if (ep.addresses.length === 0) warnings.push(`Entrypoint "${ep.key}" has no listen address: no host address is inside --nodeport-addresses`);
    else if (!ep.externalName && ep.cluster.serving.length === 0) warnings.push(`Entrypoint "${ep.key}" has no serving endpoints: it will refuse connections`);
  }
  return { source, snapshot, errors, warnings };
}

const hostPort = (address: string, port: number) => (address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`);

function endpointsColumn(ep: Entrypoint): string {
  if (ep.error) return "not served (see errors)";
  if (ep.externalName) return `external ${ep.externalName.hostname}:${ep.externalName.port}`;
  return `${ep.cluster.serving.length} serving of ${ep.cluster.endpoints.length}`;
}

/** Render a report: the summary for stdout, problems for stderr, and the exit code (1 on any error). */
export function formatReport(report: CheckReport): { out: string; err: string; code: 0 | 1 } {
  const out: string[] = [];
  const snap = report.snapshot;
  if (snap) {
    out.push(`Source: ${report.source}`, `Node: ${snap.node.name}${snap.node.zone ? ` (zone ${snap.node.zone})` : ""}`, "");
    const rows = [["TYPE", "NAME", "PROTOCOL", "LISTEN", "ENDPOINTS"]];
    for (const ep of snap.entrypoints) {
      const listen = ep.addresses.length ? ep.addresses.map((a) => hostPort(a, ep.port)).join(",") : `-:${ep.port}`;
      rows.push([ep.type, ep.name, ep.protocol, listen, endpointsColumn(ep)]);
    }
    out.push(`Entrypoints (${snap.entrypoints.length}):`);
    if (snap.entrypoints.length) {
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
      for (const r of rows) out.push(`  ${r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ")}`);
    }
    for (const hc of snap.healthChecks ?? []) {
      out.push(`Health check ${hc.namespace}/${hc.name}: port ${hc.port}, ${hc.localEndpoints} local endpoints`);
    }
  } else {
    out.push(`Source: ${report.source}`);
  }
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
  out.push("", `${report.errors.length ? "FAILED" : "OK"}: ${plural(snap?.entrypoints.length ?? 0, "entrypoint")}, ${plural(report.warnings.length, "warning")}, ${plural(report.errors.length, "error")}`);
  // Multi-line messages (YAML context, valibot's issue list) continue indented under their first line.
  const block = (prefix: string, m: string) => `${prefix}${m.trimEnd().replace(/:?\n\s*\n/g, "\n").replace(/\n/g, "\n    ")}`;
  const err = [...report.errors.map((e) => block("error: ", e)), ...report.warnings.map((w) => block("warning: ", w))];
  return { out: out.join("\n"), err: err.join("\n"), code: report.errors.length ? 1 : 0 };
}

/** Where a check writes. */
export interface CheckIo {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
}

/** Run `kubegate check` for a parsed config: collect, build, print. Resolves with the exit code. */
export async function runCheck(config: Config, io: CheckIo, options: { configFile?: string | undefined } = {}): Promise<0 | 1> {
  const collected = config.manifests ? await collectManifests(config.manifests) : await collectCluster(config);
  let source = config.manifests ? `manifests "${config.manifests}"` : `cluster (kubeconfig ${config.kubeconfig ? `"${config.kubeconfig}"` : "default"})`;
  if (options.configFile) source += `, config file "${options.configFile}"`;
  const { out, err, code } = formatReport(checkModel(source, collected, config));
  if (err) io.err(err);
  io.out(out);
  return code;
}
