// Every problem the control plane finds in a configuration, in one list and one format: the
// manifest checks (schema), the policy translation (AuthorizationPolicy, PeerAuthentication) and
// the networking model (routes, DestinationRules, ServiceEntries). The server logs exactly these;
// `weft analyze` prints them.
import type { ConfigSnapshot } from './config/config-store.ts';
import { formatProblem } from '../lab/manifest.ts';
import type { KObject } from '../lab/objects.ts';
import { buildMeshModel, type MeshModel } from './model/mesh-model.ts';
import type { MeshOptions } from './model/workloads.ts';
import { buildEnvoyResources, type EnvoyResources } from './xds/envoy/build.ts';

export interface Analysis {
  model: MeshModel;
  envoy: EnvoyResources;
  /** "<file>: <Kind ns/name>: <field>: <reason>", sorted. */
  problems: string[];
}

export function analyze(snap: ConfigSnapshot, mesh: MeshOptions): Analysis {
  const model = buildMeshModel(snap.objects, mesh);
  const envoy = buildEnvoyResources(snap.objects, mesh);
  const sourceOf = new Map(snap.objects.map((o) => [`${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`, (o as KObject & { __source?: string }).__source ?? 'config']));
  const semantic = [...model.problems, ...envoy.problems].map((p) =>
    formatProblem({
      file: sourceOf.get(`${p.kind}/${p.namespace}/${p.name}`) ?? 'config',
      object: p.namespace ? `${p.kind} ${p.namespace}/${p.name}` : `${p.kind} ${p.name}`,
      field: p.field,
      reason: p.reason,
    }),
  );
  return { model, envoy, problems: [...snap.problems.map(formatProblem), ...semantic].sort() };
}
