/**
 * What the deploy manifests promise: the DaemonSet's host network, probes, drain, capabilities and surge
 * rollout (no declared ports, the prepare-node init container), in the base and every overlay; args and a
 * config file that load as kubegate loads them; the exact RBAC rules of the base and of the lb-controller
 * overlay; and what the edge overlay changes.
 */
import { describe, expect, test } from "bun:test";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { type Config, parseFlags } from "../../src/config/flags.ts";
import { loadConfig } from "../../src/config/load.ts";
import { GATEWAY_SUBJECT, policyFor } from "../support/rbac.ts";
import { only, renderKustomization, repoRoot, type Manifest } from "./render.ts";

/** Manifests are plain data, asserted field by field. */
type Any = any;

const base = await renderKustomization("deploy/base");
const edge = await renderKustomization("deploy/overlays/edge");
const lb = await renderKustomization("deploy/overlays/lb-controller");
const local = await renderKustomization("deploy/local");
const deployments = [["base", base], ["edge", edge], ["lb-controller", lb]] as const;

const podSpec = (objects: readonly Manifest[]): Any => (only(objects, "DaemonSet", "kubegate") as Any).spec.template.spec;
const container = (objects: readonly Manifest[]): Any => podSpec(objects).containers[0];
const configFile = (objects: readonly Manifest[]): Record<string, unknown> =>
  parseYaml((only(objects, "ConfigMap", "kubegate") as Any).data["kubegate.yaml"]) as Record<string, unknown>;

/**
 * The gateway's Config from the DaemonSet's args (downward-API variables filled in) and the ConfigMap as the
 * file they name, loaded the way `kubegate` loads them (src/config/load.ts).
 */
async function effectiveConfig(objects: readonly Manifest[]): Promise<Config> {
  const env = { NODE_NAME: "node-a", POD_IP: "10.0.0.7" };
  const args = (container(objects).args as string[]).map((a) => a.replace(/\$\((\w+)\)/g, (_, v: keyof typeof env) => env[v]));
  const data = (only(objects, "ConfigMap", "kubegate") as Any).data["kubegate.yaml"] as string;
  const mountPath = (container(objects).volumeMounts as Any[]).find((m) => m.name === "config").mountPath as string;
  const loaded = await loadConfig(args, {
    hostname: "x",
    readTextFile: async (path) => {
      if (path !== `${mountPath}/kubegate.yaml`) throw new Error(`No file "${path}" in the ConfigMap mount ${mountPath}`);
      return data;
    },
  });
  if (loaded.kind !== "run") throw new Error(loaded.kind === "error" ? loaded.message : loaded.kind);
  return loaded.config;
}

describe("DaemonSet", () => {
  const ds = only(base, "DaemonSet", "kubegate") as Any;
  const spec = podSpec(base);
  const c = container(base);

  test("runs on the host network with cluster DNS, as the gateway's ServiceAccount", () => {
    expect(spec.hostNetwork).toBe(true);
    expect(spec.dnsPolicy).toBe("ClusterFirstWithHostNet");
    expect(spec.serviceAccountName).toBe((only(base, "ServiceAccount") as Any).metadata.name);
    expect(ds.metadata.namespace).toBe("kubegate-system");
    expect(ds.spec.selector.matchLabels).toEqual(Object.fromEntries(Object.entries(ds.spec.template.metadata.labels).filter(([k]) => k in ds.spec.selector.matchLabels)));
  });

  test("the state file lives on a writable hostPath mount (the root filesystem is read-only)", async () => {
    const config = await effectiveConfig(base);
    expect(config.stateFile).toBeDefined();
    const mount = (c.volumeMounts as Any[]).find((m) => config.stateFile!.startsWith(`${m.mountPath}/`));
    expect(mount).toBeDefined();
    expect(mount.readOnly).not.toBe(true);
    expect(spec.volumes.find((v: Any) => v.name === mount.name).hostPath).toMatchObject({ type: "DirectoryOrCreate" });
  });

  test("only NET_BIND_SERVICE, no escalation, read-only root", () => {
    expect(c.securityContext.capabilities).toEqual({ drop: ["ALL"], add: ["NET_BIND_SERVICE"] });
    expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
    expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
    expect(c.securityContext.privileged).toBeUndefined();
    expect(spec.securityContext.seccompProfile).toEqual({ type: "RuntimeDefault" });
  });

  test("requests and a memory limit; tolerates edge nodes", () => {
    expect(c.resources.requests).toEqual({ cpu: "100m", memory: "128Mi" });
    expect(c.resources.limits).toEqual({ memory: "1Gi" });
    expect(spec.tolerations).toContainEqual({ key: "node-role.kubernetes.io/edge", operator: "Exists" });
  });

  test("the node name and pod IP come from the downward API; the config file is mounted as a directory", () => {
    expect(c.env).toContainEqual({ name: "NODE_NAME", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } });
    expect(c.env).toContainEqual({ name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } });
    expect(c.args).toContain("--config=/etc/kubegate/kubegate.yaml");
    const mount = c.volumeMounts.find((m: Any) => m.mountPath === "/etc/kubegate");
    expect(mount.subPath).toBeUndefined(); // a subPath mount would never see a ConfigMap edit
    expect(spec.volumes.find((v: Any) => v.name === mount.name).configMap.name).toBe("kubegate");
  });

  test("the image tag is the package version", async () => {
    const pkg = JSON.parse(await readFile(join(repoRoot, "package.json"), "utf8")) as { version: string };
    expect(c.image).toBe(`kubegate:${pkg.version}`);
  });
});

describe.each(deployments)("%s: surge rollout and shutdown", (_, objects) => {
  const ds = only(objects, "DaemonSet", "kubegate") as Any;
  const spec = podSpec(objects);
  const c = container(objects);
  const allContainers = (): Any[] => [...(spec.initContainers ?? []), ...spec.containers];

  test("a new pod starts beside the old one on the host network: maxSurge 1, maxUnavailable 0", () => {
    expect(ds.spec.updateStrategy).toEqual({ type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
    expect(spec.hostNetwork).toBe(true);
  });

  test("no container declares a port, so no hostPort keeps the surge pod Pending", () => {
    expect(allContainers().map((x) => x.name)).toEqual(["prepare-node", "kubegate"]);
    for (const x of allContainers()) expect({ name: x.name, ports: x.ports }).toEqual({ name: x.name, ports: undefined });
    expect(JSON.stringify(ds)).not.toContain("hostPort");
  });

  test("liveness on /livez and readiness on /readyz; every probe names the healthz port the config binds, by number", async () => {
    const { healthzBindAddress } = await effectiveConfig(objects);
    expect(healthzBindAddress.port).toBe(10356);
    expect(c.livenessProbe.httpGet).toEqual({ path: "/livez", port: healthzBindAddress.port });
    expect(c.readinessProbe.httpGet).toEqual({ path: "/readyz", port: healthzBindAddress.port });
    const probes = allContainers().flatMap((x) => ["livenessProbe", "readinessProbe", "startupProbe"].filter((k) => x[k]).map((k) => ({ probe: `${x.name}.${k}`, port: (x[k].httpGet ?? x[k].tcpSocket ?? x[k].grpc)?.port })));
    expect(probes.length).toBeGreaterThanOrEqual(2);
    for (const p of probes) expect(p).toEqual({ probe: p.probe, port: healthzBindAddress.port });
  });

  test("prepare-node runs the gateway's image privileged, as root, before the gateway", () => {
    const init = (spec.initContainers as Any[]).find((x) => x.name === "prepare-node");
    expect(init).toMatchObject({ image: c.image, imagePullPolicy: c.imagePullPolicy, args: ["prepare-node"] });
    // Both run the image's entrypoint (the kubegate binary): `kubegate prepare-node`.
    expect([init.command, c.command]).toEqual([undefined, undefined]);
    expect(init.securityContext).toEqual({ privileged: true, runAsUser: 0, runAsNonRoot: false, readOnlyRootFilesystem: true });
  });

  test("preStop sleeps, and the grace period covers the sleep, the shutdown delay and the drain", async () => {
    const sleep = c.lifecycle.preStop.sleep.seconds as number;
    expect(sleep).toBeGreaterThan(0);
    const config = await effectiveConfig(objects);
    expect(config.drainGracePeriodMs).toBe(30_000);
    expect(config.shutdownDelayMs).toBe(5_000);
    expect(spec.terminationGracePeriodSeconds).toBeGreaterThan(sleep + (config.shutdownDelayMs + config.drainGracePeriodMs) / 1000);
  });
});

test("the OTel Collector scrapes the metrics port the config binds, by number (the DaemonSet declares none)", async () => {
  const collector = parseYaml(await readFile(join(repoRoot, "deploy/observability/otel-collector.yaml"), "utf8")) as Any;
  const relabels = collector.receivers.prometheus.config.scrape_configs[0].relabel_configs as Any[];
  expect(JSON.stringify(relabels)).not.toContain("__meta_kubernetes_pod_container_port_");
  const { metricsBindAddress } = await effectiveConfig(base);
  // `$$` is the Collector's escape for Prometheus' `$`.
  expect(relabels.filter((r) => r.target_label === "__address__")).toEqual([
    { source_labels: ["__meta_kubernetes_pod_ip"], regex: "([^:]+)", target_label: "__address__", replacement: `$$1:${metricsBindAddress.port}` },
    { source_labels: ["__meta_kubernetes_pod_ip"], regex: "(.*:.*)", target_label: "__address__", replacement: `[$$1]:${metricsBindAddress.port}` },
  ]);
  expect(relabels).toContainEqual({ source_labels: ["__meta_kubernetes_pod_container_name"], regex: container(base).name, action: "keep" });
});

describe("config file and flags", () => {
  for (const [name, objects] of deployments) {
    test(`${name}: the args and the config file load as kubegate loads them`, async () => {
      const config = await effectiveConfig(objects);
      expect(config.nodeName).toBe("node-a");
      expect(config.metricsBindAddress).toEqual({ host: "10.0.0.7", port: 10349 });
      expect(config.healthzBindAddress).toEqual({ host: "0.0.0.0", port: 10356 });
      expect(config.serviceProxyName).toBe("kubegate");
      expect(config.lbController).toBe(name === "lb-controller");
    });
  }

  test("the overlays keep every base setting they do not mean to change", () => {
    const b = configFile(base);
    expect(configFile(edge)).toEqual({ ...b, nodePortAddresses: "203.0.113.0/24" });
    expect(configFile(lb)).toEqual({ ...b, lbController: true });
  });

  test("an IPv6 pod IP is accepted in the metrics address too", () => {
    const parsed = parseFlags(["--metrics-bind-address=[fd00::7]:10349"], { hostname: "x" });
    expect(parsed.kind === "run" && parsed.config.metricsBindAddress).toEqual({ host: "fd00::7", port: 10349 });
  });
});

describe("RBAC", () => {
  test("the base ClusterRole grants exactly list/watch of services, nodes, endpointslices and create/patch of events", () => {
    expect((only(base, "ClusterRole", "kubegate") as Any).rules).toEqual([
      { apiGroups: [""], resources: ["services", "nodes"], verbs: ["list", "watch"] },
      { apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list", "watch"] },
      { apiGroups: [""], resources: ["events"], verbs: ["create", "patch"] },
    ]);
    expect(base.filter((o) => o.kind === "Role" || o.kind === "ClusterRole").map((o) => o.metadata.name)).toEqual(["kubegate"]);
    expect(policyFor(base).scopes.map((s) => s.role)).toEqual(["ClusterRole/kubegate"]);
  });

  test("the lb-controller overlay adds services/status patch and the Lease, nothing else", () => {
    expect((only(lb, "ClusterRole", "kubegate") as Any).rules).toEqual((only(base, "ClusterRole", "kubegate") as Any).rules);
    expect((only(lb, "ClusterRole", "kubegate-lb-controller") as Any).rules).toEqual([{ apiGroups: [""], resources: ["services/status"], verbs: ["patch"] }]);
    const role = only(lb, "Role", "kubegate-lb-controller") as Any;
    expect(role.metadata.namespace).toBe("kube-system");
    expect(role.rules).toEqual([
      { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["create"] },
      { apiGroups: ["coordination.k8s.io"], resources: ["leases"], resourceNames: ["kubegate-lb-controller"], verbs: ["get", "patch"] },
    ]);
    expect(policyFor(lb).scopes.map((s) => s.role).sort()).toEqual(["ClusterRole/kubegate", "ClusterRole/kubegate-lb-controller", "Role/kube-system/kubegate-lb-controller"]);
  });

  test("the edge overlay grants what the base grants", () => {
    expect(policyFor(edge).scopes).toEqual(policyFor(base).scopes);
  });

  test("deploy/local: only RBAC; the base's rules without Nodes, plus get/create on pods/portforward", () => {
    expect(local.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual(["Namespace/kubegate-system", "ServiceAccount/kubegate", "ClusterRole/kubegate-local", "ClusterRoleBinding/kubegate-local"]);
    expect((only(local, "ClusterRole", "kubegate-local") as Any).rules).toEqual([
      { apiGroups: [""], resources: ["services"], verbs: ["list", "watch"] },
      { apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list", "watch"] },
      { apiGroups: [""], resources: ["events"], verbs: ["create", "patch"] },
      { apiGroups: [""], resources: ["pods/portforward"], verbs: ["get", "create"] },
    ]);
    expect((only(local, "ClusterRoleBinding", "kubegate-local") as Any).subjects).toEqual([GATEWAY_SUBJECT]);
    expect(policyFor(local).scopes.map((s) => s.role)).toEqual(["ClusterRole/kubegate-local"]);
  });

  test("deploy/local's Namespace and ServiceAccount are the base's, so applying both in any order changes nothing", () => {
    expect(only(local, "Namespace")).toEqual(only(base, "Namespace"));
    expect(only(local, "ServiceAccount")).toEqual(only(base, "ServiceAccount"));
  });
});

describe("edge overlay", () => {
  test("runs only on edge nodes and binds only the edge NIC", async () => {
    expect(podSpec(edge).nodeSelector).toEqual({ "node-role.kubernetes.io/edge": "" });
    expect(podSpec(base).nodeSelector).toBeUndefined();
    const config = await effectiveConfig(edge);
    expect(config.nodePortAddresses).toEqual(["203.0.113.0/24"]);
    expect(config.allServices).toBe(false);
  });
});

describe("lb-controller overlay", () => {
  test("changes the pod template, so applying it rolls the pods", () => {
    expect((only(lb, "DaemonSet") as Any).spec.template.metadata.annotations).toEqual({ "kubegate.io/lb-controller": "true" });
  });
});
