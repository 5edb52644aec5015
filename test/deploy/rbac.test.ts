/**
 * test/support/rbac.ts matches rules like kube-apiserver, and the test API server enforces the roles of one
 * rendered deployment over HTTP by default (edge; lb-controller on request), so the whole integration suite
 * runs under the roles its gateways' flags imply.
 */
import { describe, expect, test } from "bun:test";
import type { AccessRequest } from "../support/apiserver.ts";
import { startApiServer } from "../support/apiserver.ts";
import { startTestGateway } from "../support/gateway.ts";
import { deploymentFor, gatewayPolicy, policyFor, ruleAllows, type PolicyRule } from "../support/rbac.ts";
import type { Manifest } from "./render.ts";

const req = (verb: string, resource: string, extra: Partial<AccessRequest> = {}): AccessRequest => ({ verb, resource, group: "", user: "u", ...extra });

describe("rule matching", () => {
  const rule = (r: Partial<PolicyRule>): PolicyRule => ({ apiGroups: [""], resources: ["services"], verbs: ["list"], ...r });

  test("verb, group and resource must all match; * matches any", () => {
    expect(ruleAllows(rule({}), req("list", "services"))).toBe(true);
    expect(ruleAllows(rule({}), req("watch", "services"))).toBe(false);
    expect(ruleAllows(rule({}), req("list", "services", { group: "apps" }))).toBe(false);
    expect(ruleAllows(rule({}), req("list", "nodes"))).toBe(false);
    expect(ruleAllows(rule({ verbs: ["*"], apiGroups: ["*"], resources: ["*"] }), req("delete", "deployments", { group: "apps", subresource: "scale" }))).toBe(true);
  });

  test("a subresource needs resource/subresource (or */subresource); the resource alone does not grant it", () => {
    expect(ruleAllows(rule({ verbs: ["patch"] }), req("patch", "services", { subresource: "status" }))).toBe(false);
    expect(ruleAllows(rule({ verbs: ["patch"], resources: ["services/status"] }), req("patch", "services", { subresource: "status" }))).toBe(true);
    expect(ruleAllows(rule({ verbs: ["patch"], resources: ["services/status"] }), req("patch", "services"))).toBe(false);
    expect(ruleAllows(rule({ verbs: ["patch"], resources: ["*/status"] }), req("patch", "nodes", { subresource: "status" }))).toBe(true);
    expect(ruleAllows(rule({ verbs: ["patch"], resources: ["*/status"] }), req("patch", "nodes"))).toBe(false);
  });

  test("resourceNames match only requests that name one of them (never a collection or a create)", () => {
    const named = rule({ verbs: ["get", "create", "list"], resourceNames: ["a"] });
    expect(ruleAllows(named, req("get", "services", { name: "a" }))).toBe(true);
    expect(ruleAllows(named, req("get", "services", { name: "b" }))).toBe(false);
    expect(ruleAllows(named, req("list", "services"))).toBe(false);
    expect(ruleAllows(named, req("create", "services"))).toBe(false);
  });
});

describe("bindings", () => {
  const sa = { kind: "ServiceAccount", name: "gw", namespace: "sys" };
  const objects = [
    { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", metadata: { name: "read" }, rules: [{ apiGroups: [""], resources: ["pods"], verbs: ["get"] }] },
    { apiVersion: "rbac.authorization.k8s.io/v1", kind: "Role", metadata: { name: "write", namespace: "ns1" }, rules: [{ apiGroups: [""], resources: ["configmaps"], verbs: ["create"] }] },
    { apiVersion: "rbac.authorization.k8s.io/v1", kind: "RoleBinding", metadata: { name: "w", namespace: "ns1" }, roleRef: { kind: "Role", name: "write" }, subjects: [sa] },
    { apiVersion: "rbac.authorization.k8s.io/v1", kind: "RoleBinding", metadata: { name: "r", namespace: "ns2" }, roleRef: { kind: "ClusterRole", name: "read" }, subjects: [sa] },
    { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRoleBinding", metadata: { name: "other" }, roleRef: { kind: "ClusterRole", name: "read" }, subjects: [{ ...sa, name: "someone-else" }] },
  ] as unknown as Manifest[];
  const policy = policyFor(objects, sa);

  test("a Role, or a ClusterRole bound by a RoleBinding, grants only in the binding's namespace", () => {
    expect(policy.authorize(req("create", "configmaps", { namespace: "ns1" }))).toBe(true);
    expect(policy.authorize(req("create", "configmaps", { namespace: "ns2" }))).toBe(false);
    expect(policy.authorize(req("get", "pods", { namespace: "ns2", name: "p" }))).toBe(true);
    expect(policy.authorize(req("get", "pods", { namespace: "ns1", name: "p" }))).toBe(false);
    expect(policy.authorize(req("get", "pods", { name: "p" }))).toBe(false);
  });

  test("a binding to another subject grants nothing; a binding to a missing role is an error", () => {
    expect(policy.scopes.map((s) => s.role)).toEqual(["Role/ns1/write", "ClusterRole/ns2/read"]);
    const broken = [...objects, { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRoleBinding", metadata: { name: "x" }, roleRef: { kind: "ClusterRole", name: "gone" }, subjects: [sa] }] as unknown as Manifest[];
    expect(() => policyFor(broken, sa)).toThrow(`ClusterRoleBinding "x" refers to ClusterRole "gone", which is not rendered`);
  });
});

describe("the test API server enforces the gateway's roles", () => {
  test("granted requests are served; anything else is 403 Forbidden naming the verb and resource", async () => {
    await using api = await startApiServer({ rbac: "lb-controller" });
    api.create({ apiVersion: "v1", kind: "Service", metadata: { name: "web", namespace: "default" }, spec: { ports: [{ port: 80 }] } });
    const tls = { ca: api.ca, cert: api.clientCert, key: api.clientKey };
    const call = (path: string, init: RequestInit = {}) => fetch(`${api.url}${path}`, { ...init, tls } as RequestInit);
    const json = { "content-type": "application/merge-patch+json" };

    expect((await call("/api/v1/services")).status).toBe(200);
    expect((await call("/apis/discovery.k8s.io/v1/endpointslices")).status).toBe(200);
    expect((await call("/api/v1/nodes?fieldSelector=metadata.name%3Dnode-a")).status).toBe(200);
    const patchStatus = await call("/api/v1/namespaces/default/services/web/status", { method: "PATCH", headers: json, body: "{}" });
    expect(patchStatus.status).toBe(200);
    expect((await call("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kubegate-lb-controller")).status).toBe(404); // allowed, absent

    const forbidden: [string, RequestInit, string][] = [
      ["/api/v1/namespaces/default/services/web", {}, `services "web" is forbidden: User "kubegate-test" cannot get resource "services" in API group "" in the namespace "default"`],
      ["/api/v1/namespaces/default/services/web", { method: "PATCH", headers: json, body: "{}" }, `cannot patch resource "services"`],
      ["/api/v1/namespaces/default/services/web", { method: "DELETE" }, `cannot delete resource "services"`],
      ["/apis/events.k8s.io/v1/namespaces/default/events", { method: "POST", body: "{}" }, `cannot create resource "events" in API group "events.k8s.io"`],
      ["/apis/coordination.k8s.io/v1/namespaces/default/leases/kubegate-lb-controller", {}, `in the namespace "default"`],
      ["/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/other", {}, `leases.coordination.k8s.io "other" is forbidden`],
      ["/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", {}, `cannot list resource "leases"`],
      ["/api/v1/namespaces/default/events", {}, `cannot list resource "events"`],
    ];
    for (const [path, init, message] of forbidden) {
      const res = await call(path, init);
      const body = (await res.json()) as { reason: string; message: string };
      expect({ path, status: res.status, reason: body.reason }).toEqual({ path, status: 403, reason: "Forbidden" });
      expect(body.message).toContain(message);
    }
  });

  test("a test's own authorizer sees every request and can refuse more, never grant more", async () => {
    const seen: string[] = [];
    await using api = await startApiServer({ authorize: (a) => (seen.push(`${a.verb} ${a.resource}`), a.resource !== "nodes") });
    const tls = { ca: api.ca, cert: api.clientCert, key: api.clientKey };
    expect((await fetch(`${api.url}/api/v1/services`, { tls } as RequestInit)).status).toBe(200);
    expect((await fetch(`${api.url}/api/v1/nodes`, { tls } as RequestInit)).status).toBe(403);
    expect((await fetch(`${api.url}/api/v1/namespaces/default/services/x`, { tls } as RequestInit)).status).toBe(403);
    expect(seen).toEqual(["list services", "list nodes", "get services"]);
  });

  test("rbac: false serves every verb, for tests of the server itself", async () => {
    await using api = await startApiServer({ rbac: false });
    api.create({ apiVersion: "v1", kind: "Service", metadata: { name: "web", namespace: "default" }, spec: { ports: [{ port: 80 }] } });
    const res = await fetch(`${api.url}/api/v1/namespaces/default/services/web`, { tls: { ca: api.ca, cert: api.clientCert, key: api.clientKey } } as RequestInit);
    expect(res.status).toBe(200);
  });

  test("by default the edge deployment's roles: no Leases, no services/status; refusals are recorded", async () => {
    await using api = await startApiServer();
    expect(api.rbac).toBe("edge");
    api.create({ apiVersion: "v1", kind: "Service", metadata: { name: "web", namespace: "default" }, spec: { ports: [{ port: 80 }] } });
    const tls = { ca: api.ca, cert: api.clientCert, key: api.clientKey };
    const call = (path: string, init: RequestInit = {}) => fetch(`${api.url}${path}`, { ...init, tls } as RequestInit);
    expect((await call("/api/v1/services")).status).toBe(200);
    const status = await call("/api/v1/namespaces/default/services/web/status", { method: "PATCH", headers: { "content-type": "application/merge-patch+json" }, body: "{}" });
    expect(status.status).toBe(403);
    expect((await call("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kubegate-lb-controller")).status).toBe(403);
    expect(api.forbidden.map((a) => `${a.verb} ${a.resource}${a.subresource ? `/${a.subresource}` : ""}`)).toEqual(["patch services/status", "get leases"]);
    api.clearRequests();
    expect(api.forbidden).toEqual([]);
  });

  test("a test's own authorizer refusing is not an RBAC refusal", async () => {
    await using api = await startApiServer({ authorize: () => false });
    expect((await fetch(`${api.url}/api/v1/services`, { tls: { ca: api.ca, cert: api.clientCert, key: api.clientKey } } as RequestInit)).status).toBe(403);
    expect(api.forbidden).toEqual([]);
  });

  test("each deployment binds its own roles: edge is base's, lb-controller adds the Lease and status rules, local has its own", async () => {
    const roles = async (d: "base" | "edge" | "lb-controller" | "local") => (await gatewayPolicy(d)).scopes.map((s) => s.role).sort();
    expect(await roles("base")).toEqual(["ClusterRole/kubegate"]);
    expect(await roles("edge")).toEqual(["ClusterRole/kubegate"]);
    expect((await gatewayPolicy("edge")).grants()).toEqual((await gatewayPolicy("base")).grants());
    expect(await roles("lb-controller")).toEqual(["ClusterRole/kubegate", "ClusterRole/kubegate-lb-controller", "Role/kube-system/kubegate-lb-controller"]);
    expect(await roles("local")).toEqual(["ClusterRole/kubegate-local"]);
  });

  test("the flags pick the deployment; a gateway cannot start on a server granting other roles", async () => {
    expect(deploymentFor([])).toBe("edge");
    expect(deploymentFor(["--lb-controller", "--lb-pool", "10.0.0.0/24"])).toBe("lb-controller");
    expect(() => deploymentFor(["--config", "x.yaml"])).toThrow("Cannot tell the deployment from a config file");
    expect(deploymentFor(["--local"])).toBe("local");
    expect(deploymentFor(["--endpoint-access=port-forward"])).toBe("local");
    expect(deploymentFor(["--endpoint-access", "auto"])).toBe("local");
    expect(deploymentFor(["--endpoint-access", "direct"])).toBe("edge");
    expect(deploymentFor(["--endpoint-access=direct", "--lb-controller"])).toBe("lb-controller");
    await using lb = await startApiServer({ rbac: "lb-controller" });
    await expect(startTestGateway(lb, [])).rejects.toThrow(`The gateway's flags need the "edge" deployment's roles, but the test API server enforces "lb-controller"`);
    await using edge = await startApiServer();
    await expect(startTestGateway(edge, ["--lb-controller"])).rejects.toThrow(`need the "lb-controller" deployment's roles, but the test API server enforces "edge"`);
    await using local = await startApiServer({ rbac: "local" });
    await expect(startTestGateway(local, [])).rejects.toThrow(`need the "edge" deployment's roles, but the test API server enforces "local"`);
  });

  test("the local deployment: the model without Nodes, and get and create on pods/portforward (not the Pods themselves)", async () => {
    const local = await gatewayPolicy("local");
    const ok = (verb: string, resource: string, extra: Partial<AccessRequest> = {}) => local.authorize(req(verb, resource, extra));
    expect(ok("list", "services")).toBe(true);
    expect(ok("watch", "endpointslices", { group: "discovery.k8s.io" })).toBe(true);
    expect(ok("create", "events", { namespace: "default" })).toBe(true);
    expect(ok("get", "pods", { namespace: "default", name: "web-1" })).toBe(false);
    expect(ok("get", "pods", { namespace: "default", name: "web-1", subresource: "portforward" })).toBe(true);
    expect(ok("create", "pods", { namespace: "default", name: "web-1", subresource: "portforward" })).toBe(true);
    expect(ok("list", "nodes")).toBe(false);
    expect(ok("list", "pods")).toBe(false);
    expect(ok("create", "pods", { namespace: "default", name: "web-1", subresource: "exec" })).toBe(false);
    expect(ok("patch", "services", { subresource: "status", name: "web" })).toBe(false);
  });

  test("a request the deployment refuses fails the gateway's test when the gateway is disposed", async () => {
    await using api = await startApiServer();
    api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" }, status: { addresses: [{ type: "InternalIP", address: "127.0.0.1" }] } });
    const gw = await startTestGateway(api);
    // Stands for a request of the gateway that the edge roles refuse (a plain gateway touching a Lease).
    const res = await fetch(`${api.url}/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x`, { tls: { ca: api.ca, cert: api.clientCert, key: api.clientKey } } as RequestInit);
    expect(res.status).toBe(403);
    await expect(gw[Symbol.asyncDispose]()).rejects.toThrow(`RBAC of the "edge" deployment refused 1 request(s) of the gateway: get coordination.k8s.io/leases in "kube-system" "x"`);
  });
});
