// Every problem the control plane finds in a configuration, in one list and one format: the
// manifest checks (schema), the policy translation (AuthorizationPolicy, PeerAuthentication) and
// the networking model (routes, DestinationRules, ServiceEntries). The server logs exactly these;
// `weft analyze` prints them.
import { ofKind, type ConfigSnapshot } from './config/config-store.ts';
import { formatProblem } from '../kube/manifest.ts';
import { MeshModelBuilder, type MeshModel, type ModelProblem } from './model/mesh-model.ts';
import type { MeshOptions } from './model/networking/workloads.ts';
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
    const model = this.model.build(snap);
    const envoy = this.envoy.build(snap);
    const semantic = [...model.problems, ...envoy.problems];
    return { model, envoy, problems: [...snap.problems.map(formatProblem), ...formatSemantic(semantic, snap)].sort() };
  }
}

export function analyze(snap: ConfigSnapshot, mesh: MeshOptions): Analysis {
  return new Analyzer(mesh).run(snap);
}

/** Names each problem's file, looking the object up in its namespace. */
function formatSemantic(problems: ModelProblem[], snap: ConfigSnapshot): string[] {
  return problems.map((p) => {
    const o = ofKind(snap.namespaces.get(p.namespace), p.kind).find((x) => x.metadata.name === p.name) as { __source?: string } | undefined;
    return formatProblem({
      file: o?.__source ?? 'config',
      object: p.namespace ? `${p.kind} ${p.namespace}/${p.name}` : `${p.kind} ${p.name}`,
      field: p.field,
      reason: p.reason,
    });
  });
}
