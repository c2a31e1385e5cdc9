// Every problem the control plane finds in a configuration, in one list and one format: the
// manifest checks (schema), the policy translation (AuthorizationPolicy, PeerAuthentication) and
// the networking model (routes, DestinationRules, ServiceEntries). The server logs exactly these;
// `weft analyze` prints them.
import type { ConfigSnapshot } from './config/config-store.ts';
import { formatProblem } from '../lab/manifest.ts';
import type { KObject } from '../lab/objects.ts';
import { MeshModelBuilder, type MeshModel, type ModelProblem } from './model/mesh-model.ts';
import type { MeshOptions } from './model/workloads.ts';
import { EnvoyBuilder, type EnvoyResources } from './xds/envoy/build.ts';

export interface Analysis {
  model: MeshModel;
  envoy: EnvoyResources;
  /** "<file>: <Kind ns/name>: <field>: <reason>", sorted. */
  problems: string[];
}

/** Analyses successive snapshots, reusing what unchanged objects produced last time. */
export class Analyzer {
  private readonly model: MeshModelBuilder;
  private readonly envoy: EnvoyBuilder;

  constructor(mesh: MeshOptions) {
    this.model = new MeshModelBuilder(mesh);
    this.envoy = new EnvoyBuilder(mesh);
  }

  run(snap: ConfigSnapshot): Analysis {
    const model = this.model.build(snap.objects);
    const envoy = this.envoy.build(snap.objects);
    const semantic = [...model.problems, ...envoy.problems];
    return { model, envoy, problems: [...snap.problems.map(formatProblem), ...formatSemantic(semantic, snap.objects)].sort() };
  }
}

export function analyze(snap: ConfigSnapshot, mesh: MeshOptions): Analysis {
  return new Analyzer(mesh).run(snap);
}

/** Names each problem's file; only objects of a kind with problems are looked at. */
function formatSemantic(problems: ModelProblem[], objects: readonly KObject[]): string[] {
  if (!problems.length) return [];
  const kinds = new Set(problems.map((p) => p.kind));
  const sourceOf = new Map<string, string>();
  for (const o of objects) if (kinds.has(o.kind)) sourceOf.set(`${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`, (o as KObject & { __source?: string }).__source ?? 'config');
  return problems.map((p) =>
    formatProblem({
      file: sourceOf.get(`${p.kind}/${p.namespace}/${p.name}`) ?? 'config',
      object: p.namespace ? `${p.kind} ${p.namespace}/${p.name}` : `${p.kind} ${p.name}`,
      field: p.field,
      reason: p.reason,
    }),
  );
}
