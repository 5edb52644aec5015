/**
 * Model scale benchmark: 10k Services / 100k endpoints (override with SERVICES= and ENDPOINTS_PER_SERVICE=).
 * Prints the full build time, the store's first flush, the incremental single-EndpointSlice update
 * latency (apply + flush, p50/p99) and heap use.
 *
 *   bun test/bench/model-scale.ts
 */
import type { EndpointSlice, Service } from "../../src/kube/objects.ts";
import { buildSnapshot } from "../../src/model/build.ts";
import { ModelStore } from "../../src/model/store.ts";
import type { ModelOptions, Snapshot } from "../../src/model/types.ts";

const SERVICES = Number(process.env.SERVICES ?? 10_000);
const PER_SERVICE = Number(process.env.ENDPOINTS_PER_SERVICE ?? 10);
const UPDATES = Number(process.env.UPDATES ?? 500);

const options: ModelOptions = {
  nodeName: "node-1",
  hostAddresses: ["127.0.0.1", "10.0.0.1", "::1"],
  nodePortAddresses: [],
  serviceProxyName: "kubegate",
  allServices: true,
};

function service(i: number): Service {
  const lb = i % 2 === 0;
  return {
    metadata: { name: `svc-${i}`, namespace: `ns-${i % 50}`, creationTimestamp: "2024-01-01T00:00:00Z", annotations: {} },
    spec: {
      type: lb ? "LoadBalancer" : "NodePort",
      clusterIP: "10.96.0.1",
      ports: [{ name: "http", protocol: "TCP", port: lb ? 10_000 + i : 80, targetPort: 8080, nodePort: 30_000 + i, appProtocol: "http" }],
    },
  };
}

function slice(i: number, generation = 0): EndpointSlice {
  const endpoints = [];
  for (let j = 0; j < PER_SERVICE; j++) {
    const n = i * PER_SERVICE + j;
    endpoints.push({
      addresses: [`10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`],
      conditions: { ready: j !== 0 || generation % 2 === 0, serving: true, terminating: false },
      nodeName: `node-${j % 20}`,
      zone: `zone-${j % 3}`,
      targetRef: { kind: "Pod", name: `svc-${i}-${j}`, namespace: `ns-${i % 50}` },
    });
  }
  return {
    metadata: {
      name: `svc-${i}-abcde`,
      namespace: `ns-${i % 50}`,
      labels: { "kubernetes.io/service-name": `svc-${i}` },
      annotations: { "endpoints.kubernetes.io/last-change-trigger-time": new Date().toISOString() },
    },
    addressType: "IPv4",
    ports: [{ name: "http", protocol: "TCP", port: 8080 }],
    endpoints,
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}
const ms = (n: number) => `${n.toFixed(3)} ms`;
const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

const heapBefore = process.memoryUsage().heapUsed;
const services = Array.from({ length: SERVICES }, (_, i) => service(i));
const slices = Array.from({ length: SERVICES }, (_, i) => slice(i));
console.log(`model-scale: ${SERVICES} Services, ${SERVICES * PER_SERVICE} endpoints, ${UPDATES} single-slice updates`);

const cpuMs = (since: NodeJS.CpuUsage) => {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1000;
};
const fullTimes: number[] = [];
const fullCpu: number[] = [];
let full: Snapshot | undefined;
for (let run = 0; run < 3; run++) {
  // Fresh slice objects each run: the per-slice memo must not make later runs look faster.
  const fresh = slices.map((s) => ({ ...s }));
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  full = buildSnapshot({ services, endpointSlices: fresh, nodes: [] }, options);
  fullCpu.push(cpuMs(c0));
  fullTimes.push(performance.now() - t0);
}
fullTimes.sort((a, b) => a - b);
fullCpu.sort((a, b) => a - b);
console.log(
  `full build:               ${ms(percentile(fullTimes, 50))} wall, ${ms(percentile(fullCpu, 50))} CPU (median of 3; ${full?.entrypoints.length} entrypoints)`,
);

let published: Snapshot | undefined;
const store = new ModelStore(options, { onSnapshot: (s) => (published = s), schedule: () => {} });
let t0 = performance.now();
for (const [i, s] of services.entries()) store.apply({ type: "upsert", kind: "Service", key: `ns-${i % 50}/svc-${i}`, object: s });
for (const [i, s] of slices.entries()) store.apply({ type: "upsert", kind: "EndpointSlice", key: `ns-${i % 50}/svc-${i}-abcde`, object: s });
for (const kind of ["Service", "EndpointSlice", "Node"] as const) store.synced(kind);
store.flush();
console.log(`store first flush:        ${ms(performance.now() - t0)} (apply ${2 * SERVICES} events + build)`);

const times: number[] = [];
const updatesCpu = process.cpuUsage();
const generations = new Map<number, number>();
let x = 12345;
for (let u = 0; u < UPDATES; u++) {
  x = (x * 1103515245 + 12345) & 0x7fffffff;
  const i = x % SERVICES;
  const generation = (generations.get(i) ?? 0) + 1; // flips endpoint 0 between ready and not ready
  generations.set(i, generation);
  const next = slice(i, generation);
  const before = published;
  t0 = performance.now();
  store.apply({ type: "upsert", kind: "EndpointSlice", key: `ns-${i % 50}/svc-${i}-abcde`, object: next });
  store.flush();
  times.push(performance.now() - t0);
  if (published === before) throw new Error(`Update ${u} did not publish`);
}
const cpuPerUpdate = cpuMs(updatesCpu) / UPDATES; // includes creating each new slice object
times.sort((a, b) => a - b);
console.log(
  `incremental slice update: p50 ${ms(percentile(times, 50))}, p99 ${ms(percentile(times, 99))}, max ${ms(times.at(-1) ?? 0)} wall; ${ms(cpuPerUpdate)} CPU on average`,
);
full = undefined;
(globalThis as { Bun?: { gc(force: boolean): void } }).Bun?.gc(true); // retained memory only
const mem = process.memoryUsage();
console.log(`memory:                   heapUsed after GC ${mib(mem.heapUsed)} (+${mib(mem.heapUsed - heapBefore)} for the objects and the store), rss ${mib(mem.rss)}`);
console.log(`store stats:              ${JSON.stringify(store.stats)}`);
