/**
 * Kubernetes RBAC for the test API server: the roles one deployment of the gateway binds (deploy/overlays/edge,
 * whose RBAC is deploy/base's, deploy/overlays/lb-controller, which adds the Lease and services/status rules,
 * or deploy/local, the role of a gateway on a developer's machine that reaches pods through port-forward)
 * decide every resource request, so the integration suite answers 403 to anything the deployment the
 * gateway's flags imply does not grant: a gateway without `--lb-controller` gets only the base roles.
 *
 * Rule matching is kube-apiserver's (pkg/apis/rbac/v1/evaluation_helpers.go): `*` in apiGroups, resources
 * and verbs; `resource/subresource` and `*\/subresource`; `resourceNames` only match requests that name an
 * object (so never list, watch of a collection, or create). A ClusterRole bound by a ClusterRoleBinding
 * applies everywhere; a Role, or a ClusterRole bound by a RoleBinding, only in the binding's namespace.
 */
import { renderKustomization, type Manifest } from "../deploy/render.ts";
import type { AccessRequest } from "./apiserver.ts";

/** One RBAC `PolicyRule`. */
export interface PolicyRule {
  readonly apiGroups: readonly string[];
  readonly resources: readonly string[];
  readonly verbs: readonly string[];
  readonly resourceNames?: readonly string[] | undefined;
}

/** Rules granted in one scope: `namespace` undefined means cluster-wide. */
export interface ScopedRules {
  /** `ClusterRole/name` or `Role/namespace/name`, for messages. */
  readonly role: string;
  readonly namespace: string | undefined;
  readonly rules: readonly PolicyRule[];
}

/** One grantable permission: a verb on a resource (with its subresource) in a group, where and on what names. */
export interface Grant {
  readonly role: string;
  readonly namespace: string | undefined;
  readonly group: string;
  /** `services` or `services/status`. */
  readonly resource: string;
  readonly verb: string;
  readonly resourceNames: readonly string[] | undefined;
}

/** The ServiceAccount the shipped bindings grant to. */
export const GATEWAY_SUBJECT = { kind: "ServiceAccount", name: "kubegate", namespace: "kubegate-system" } as const;

/** The shipped deployments and their kustomizations: the roles a cluster grants depend on which one it applied. */
export const DEPLOYMENTS = {
  base: "deploy/base",
  edge: "deploy/overlays/edge",
  "lb-controller": "deploy/overlays/lb-controller",
  local: "deploy/local",
} as const;

/** One shipped deployment (a key of {@link DEPLOYMENTS}). */
export type Deployment = keyof typeof DEPLOYMENTS;

/** The `--endpoint-access` value among args (`--endpoint-access=x` or `--endpoint-access x`), if given. */
function endpointAccess(args: readonly string[]): string | undefined {
  let value: string | undefined;
  for (const [i, a] of args.entries()) {
    if (a.startsWith("--endpoint-access=")) value = a.slice("--endpoint-access=".length);
    else if (a === "--endpoint-access") value = args[i + 1];
  }
  return value;
}

/**
 * The deployment a gateway's command line needs: `local` with `--local` or `--endpoint-access` `port-forward`
 * or `auto` (pods reached through pods/portforward, no Node object), `lb-controller` with `--lb-controller`,
 * else `edge`.
 * @example deploymentFor(["--lb-controller", "--lb-pool", "10.0.0.0/24"]) // "lb-controller"
 * @example deploymentFor(["--endpoint-access=auto"]) // "local"
 */
export function deploymentFor(args: readonly string[]): Deployment {
  if (args.some((a) => a.startsWith("--config"))) {
    throw new Error(`Cannot tell the deployment from a config file: pass --lb-controller, --local or --endpoint-access on the command line (args: ${JSON.stringify(args)})`);
  }
  const access = endpointAccess(args);
  if (args.some((a) => a === "--local" || a === "--local=true") || access === "port-forward" || access === "auto") return "local";
  const on = args.some((a) => a === "--lb-controller" || a === "--lb-controller=true");
  return on ? "lb-controller" : "edge";
}

/** The set of roles a deployment binds (base and edge bind the same: the edge overlay only patches the DaemonSet). */
const roleSet = (d: Deployment): string => (d === "base" || d === "edge" ? "base" : d);

/** Whether two deployments bind the same roles. */
export const sameRoles = (a: Deployment, b: Deployment): boolean => roleSet(a) === roleSet(b);

const has = (list: readonly string[], v: string): boolean => list.includes("*") || list.includes(v);

/** Whether one rule allows the request (kube-apiserver's RuleAllows). */
export function ruleAllows(rule: PolicyRule, a: AccessRequest): boolean {
  if (!has(rule.verbs, a.verb) || !has(rule.apiGroups, a.group)) return false;
  const combined = a.subresource ? `${a.resource}/${a.subresource}` : a.resource;
  const resourceOk = rule.resources.some(
    (r) => r === "*" || r === combined || (a.subresource !== undefined && r === `*/${a.subresource}`),
  );
  if (!resourceOk) return false;
  if (!rule.resourceNames || rule.resourceNames.length === 0) return true;
  return a.name !== undefined && rule.resourceNames.includes(a.name);
}

/** A set of bound rules and the decisions they make. */
export class RbacPolicy {
  readonly scopes: readonly ScopedRules[];

  constructor(scopes: readonly ScopedRules[]) {
    this.scopes = scopes;
  }

  /** The first scope and rule that allow the request, or undefined (403). */
  explain(a: AccessRequest): { scope: ScopedRules; rule: PolicyRule } | undefined {
    for (const scope of this.scopes) {
      if (scope.namespace !== undefined && a.namespace !== scope.namespace) continue;
      const rule = scope.rules.find((r) => ruleAllows(r, a));
      if (rule) return { scope, rule };
    }
    return undefined;
  }

  /** Whether the bound roles allow the request. */
  authorize(a: AccessRequest): boolean {
    return this.explain(a) !== undefined;
  }

  /** Every (group, resource, verb) the rules grant, one entry each. */
  grants(): Grant[] {
    const out: Grant[] = [];
    for (const scope of this.scopes) {
      for (const rule of scope.rules) {
        for (const group of rule.apiGroups)
          for (const resource of rule.resources)
            for (const verb of rule.verbs) out.push({ role: scope.role, namespace: scope.namespace, group, resource, verb, resourceNames: rule.resourceNames });
      }
    }
    return out;
  }

  /** The same policy without one grant (for "which request would this removal refuse?"). */
  without(g: Grant): RbacPolicy {
    const scopes: ScopedRules[] = [];
    for (const scope of this.scopes) {
      const rules: PolicyRule[] = [];
      for (const rule of scope.rules) {
        if (scope.role !== g.role || scope.namespace !== g.namespace) {
          rules.push(rule);
          continue;
        }
        // Split the rule into single-permission rules and leave the one out.
        for (const group of rule.apiGroups)
          for (const resource of rule.resources)
            for (const verb of rule.verbs) {
              if (group === g.group && resource === g.resource && verb === g.verb && sameNames(rule.resourceNames, g.resourceNames)) continue;
              rules.push({ apiGroups: [group], resources: [resource], verbs: [verb], resourceNames: rule.resourceNames });
            }
      }
      scopes.push({ ...scope, rules });
    }
    return new RbacPolicy(scopes);
  }
}

function sameNames(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  return JSON.stringify(a ?? []) === JSON.stringify(b ?? []);
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

function rulesOf(role: Manifest): PolicyRule[] {
  const rules = role["rules"];
  if (!Array.isArray(rules)) return [];
  return rules.map((r: unknown, i) => {
    const strs = (k: string): string[] => {
      const v = isObj(r) ? r[k] : undefined;
      if (v === undefined) return [];
      if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) throw new Error(`Invalid rule ${i} of ${role.kind} "${role.metadata.name}": ${k} must be a list of strings`);
      return v;
    };
    const names = strs("resourceNames");
    return { apiGroups: strs("apiGroups"), resources: strs("resources"), verbs: strs("verbs"), ...(names.length ? { resourceNames: names } : {}) };
  });
}

/**
 * The rules that `subject` holds through the bindings among `objects` (RBAC's binding semantics).
 * @example policyFor(await renderKustomization("deploy/base"), GATEWAY_SUBJECT)
 */
export function policyFor(objects: readonly Manifest[], subject: { kind: string; name: string; namespace: string } = GATEWAY_SUBJECT): RbacPolicy {
  const find = (kind: string, name: string, namespace?: string) =>
    objects.find((o) => o.kind === kind && o.metadata.name === name && (namespace === undefined || o.metadata.namespace === namespace));
  const scopes: ScopedRules[] = [];
  for (const b of objects) {
    if (b.kind !== "ClusterRoleBinding" && b.kind !== "RoleBinding") continue;
    const subjects = Array.isArray(b["subjects"]) ? (b["subjects"] as unknown[]) : [];
    const bound = subjects.some((s) => isObj(s) && s["kind"] === subject.kind && s["name"] === subject.name && (s["namespace"] ?? b.metadata.namespace) === subject.namespace);
    if (!bound) continue;
    const ref = isObj(b["roleRef"]) ? b["roleRef"] : {};
    const refKind = String(ref["kind"]);
    const refName = String(ref["name"]);
    if (b.kind === "ClusterRoleBinding" && refKind !== "ClusterRole") throw new Error(`ClusterRoleBinding "${b.metadata.name}" must refer to a ClusterRole, not a ${refKind}`);
    const ns = b.kind === "RoleBinding" ? b.metadata.namespace : undefined;
    const role = refKind === "ClusterRole" ? find("ClusterRole", refName) : find("Role", refName, ns);
    if (!role) throw new Error(`${b.kind} "${b.metadata.name}" refers to ${refKind} "${refName}", which is not rendered`);
    scopes.push({ role: ns ? `${refKind}/${ns}/${refName}` : `${refKind}/${refName}`, namespace: ns, rules: rulesOf(role) });
  }
  return new RbacPolicy(scopes);
}

const cached = new Map<Deployment, Promise<RbacPolicy>>();

/**
 * The gateway's policy in one deployment: the roles its kustomization binds to the gateway's ServiceAccount,
 * rendered once per process.
 * @example (await gatewayPolicy("edge")).authorize({ verb: "patch", resource: "services", subresource: "status", group: "", user: "u" }) // false
 */
export function gatewayPolicy(deployment: Deployment): Promise<RbacPolicy> {
  let p = cached.get(deployment);
  if (!p) {
    p = renderKustomization(DEPLOYMENTS[deployment]).then((objects) => policyFor(objects));
    cached.set(deployment, p);
  }
  return p;
}
