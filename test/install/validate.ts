// Validation of rendered objects: the Kubernetes (and Gateway API) JSON schemas from
// kubernetes-models, plus the cross-object invariants a schema cannot see (ports in range, mounts
// that name a volume, selectors that select the template, bindings to roles that exist).
import { Gateway } from '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/Gateway';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { Role } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import { RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';

type Obj = { apiVersion: string; kind: string; metadata?: { name?: string; namespace?: string; labels?: Record<string, string> }; [k: string]: unknown };
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type ModelClass = new (data: any) => { validate(): void };

const MODELS: Record<string, ModelClass> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'apps/v1/DaemonSet': DaemonSet,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'rbac.authorization.k8s.io/v1/Role': Role,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'apiextensions.k8s.io/v1/CustomResourceDefinition': CustomResourceDefinition,
  'gateway.networking.k8s.io/v1/Gateway': Gateway,
};

/** Schema validation; throws naming the object. Kustomizations have no published schema: checked by shape. */
export function validateSchema(o: Obj): void {
  const id = `${o.kind} ${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
  if (o.apiVersion === 'kustomize.config.k8s.io/v1beta1' && o.kind === 'Kustomization') {
    if (!Array.isArray(o.resources) || o.resources.some((r) => typeof r !== 'string')) throw new Error(`${id}: resources must be a list of paths`);
    return;
  }
  const Model = MODELS[`${o.apiVersion}/${o.kind}`];
  if (!Model) throw new Error(`${id}: no schema known for ${o.apiVersion} ${o.kind}`);
  try {
    new Model(structuredClone(o)).validate();
  } catch (e) {
    throw new Error(`${id}: ${(e as Error).message}`, { cause: e });
  }
}

export function podSpecOf(o: Obj): IPodSpec | undefined {
  return (o as { spec?: { template?: { spec?: IPodSpec } } }).spec?.template?.spec;
}

export function containersOf(o: Obj): IContainer[] {
  const s = podSpecOf(o);
  return s ? [...(s.initContainers ?? []), ...s.containers] : [];
}

const validPort = (p: unknown) => typeof p === 'string' ? /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(p) && p.length <= 15 : Number.isInteger(p) && (p as number) >= 1 && (p as number) <= 65535;

/** Invariants across fields and objects; returns problems (empty when fine). */
export function checkInvariants(objects: Obj[]): string[] {
  const problems: string[] = [];
  const has = (kind: string, name: string, ns?: string) => objects.some((o) => o.kind === kind && o.metadata?.name === name && (ns === undefined || o.metadata?.namespace === ns));
  for (const o of objects) {
    const id = `${o.kind} ${o.metadata?.name}`;
    if (o.kind === 'Service') {
      const spec = o.spec as { ports: { port: number; targetPort?: number | string; name?: string }[]; selector?: Record<string, string> };
      for (const p of spec.ports) if (!validPort(p.port) || (p.targetPort !== undefined && !validPort(p.targetPort))) problems.push(`${id}: port ${p.name}: ${p.port} -> ${p.targetPort} out of range`);
      const selected = objects.filter((w) => podSpecOf(w) && Object.entries(spec.selector ?? {}).every(([k, v]) => (w.spec as { template: { metadata: { labels: Record<string, string> } } }).template.metadata.labels[k] === v));
      if (!selected.length) problems.push(`${id}: selector ${JSON.stringify(spec.selector)} selects no rendered workload`);
    }
    if (o.kind === 'PodDisruptionBudget') {
      const sel = (o.spec as { selector?: { matchLabels?: Record<string, string> } }).selector?.matchLabels ?? {};
      const selected = objects.filter((w) => podSpecOf(w) && w.metadata?.namespace === o.metadata?.namespace && Object.entries(sel).every(([k, v]) => (w.spec as { template: { metadata: { labels: Record<string, string> } } }).template.metadata.labels[k] === v));
      if (!Object.keys(sel).length || !selected.length) problems.push(`${id}: selector ${JSON.stringify(sel)} selects no rendered workload`);
    }
    const pod = podSpecOf(o);
    if (!pod) continue;
    const spec = o.spec as { selector: { matchLabels: Record<string, string> }; template: { metadata: { labels: Record<string, string> } } };
    for (const [k, v] of Object.entries(spec.selector.matchLabels)) if (spec.template.metadata.labels[k] !== v) problems.push(`${id}: selector ${k}=${v} does not match its template`);
    if (pod.serviceAccountName && !has('ServiceAccount', pod.serviceAccountName, o.metadata?.namespace)) problems.push(`${id}: service account ${pod.serviceAccountName} is not rendered`);
    const volumes = new Set((pod.volumes ?? []).map((v) => v.name));
    const names = new Set<string>();
    for (const c of containersOf(o)) {
      if (names.has(c.name)) problems.push(`${id}: container name ${c.name} twice`);
      names.add(c.name);
      for (const p of c.ports ?? []) if (!validPort(p.containerPort) || (p.name && !validPort(p.name))) problems.push(`${id}/${c.name}: port ${p.name} ${p.containerPort} invalid`);
      for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe]) {
        const port = probe?.httpGet?.port ?? probe?.tcpSocket?.port;
        if (port !== undefined && !validPort(port)) problems.push(`${id}/${c.name}: probe port ${port} invalid`);
        if (typeof port === 'number' && !(c.ports ?? []).some((p) => p.containerPort === port)) problems.push(`${id}/${c.name}: probe port ${port} is not a declared container port`);
      }
      for (const m of c.volumeMounts ?? []) if (!volumes.has(m.name)) problems.push(`${id}/${c.name}: mount ${m.name} names no volume`);
      if (!c.resources?.requests) problems.push(`${id}/${c.name}: no resource requests`);
    }
  }
  for (const b of objects.filter((o) => o.kind === 'ClusterRoleBinding' || o.kind === 'RoleBinding')) {
    const ref = b.roleRef as { kind: string; name: string };
    if (!has(ref.kind, ref.name, ref.kind === 'Role' ? b.metadata?.namespace : undefined)) problems.push(`${b.kind} ${b.metadata?.name}: role ${ref.kind} ${ref.name} is not rendered`);
    for (const s of b.subjects as { kind: string; name: string; namespace?: string }[]) if (!has(s.kind, s.name, s.namespace)) problems.push(`${b.kind} ${b.metadata?.name}: subject ${s.kind} ${s.namespace}/${s.name} is not rendered`);
  }
  return problems;
}
