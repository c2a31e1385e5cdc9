// `weft waypoint apply|list`, as `istioctl waypoint apply|generate|list`: write a waypoint Gateway
// (to a running lab, or as YAML for kubectl with -o yaml), and show waypoints with what enrolls in
// them. The Gateway is rendered and checked by src/kube/waypoint.ts, as the control plane checks it.
import { Command, Option } from 'commander';
import type { ApplyOutcome } from '../lab/cluster.ts';
import { labCall } from '../lab/client.ts';
import { LabLayout } from '../lab/layout.ts';
import { toYaml } from '../install/render.ts';
import type { KObject } from '../kube/objects.ts';
import {
  FOR_SERVICE_ACCOUNT_ANNOTATION,
  isWaypointGateway,
  USE_WAYPOINT_LABEL,
  WAYPOINT_FOR,
  WAYPOINT_FOR_LABEL,
  waypointGateway,
  waypointUsers,
  type GatewayStatus,
  type WaypointFor,
} from '../kube/waypoint.ts';
import { age, table } from './table.ts';
import { registerWaypointRun, WAYPOINT_DESCRIPTION } from './waypoint-run.ts';

const labOpt = () => new Option('--lab <name>', 'lab to write to / read from').default('weft');

interface LabState {
  pods: KObject[];
  services: KObject[];
  objects: KObject[];
}

export function registerWaypointCommands(program: Command): void {
  const waypoint = program.command('waypoint').description(WAYPOINT_DESCRIPTION);
  registerWaypointRun(waypoint);

  waypoint
    .command('apply')
    .description('write a waypoint Gateway (class istio-waypoint) to a running lab, or print it with -o yaml')
    .requiredOption('-n, --namespace <ns>', 'namespace of the waypoint')
    .option('--name <name>', 'name of the waypoint Gateway', 'waypoint')
    .addOption(new Option('--for <traffic>', 'traffic the waypoint handles (istio.io/waypoint-for)').choices([...WAYPOINT_FOR]).default('service'))
    .option('--service-account <sa>', `serve only this service account's workloads (${FOR_SERVICE_ACCOUNT_ANNOTATION})`)
    .option('--enroll-namespace', `label the namespace ${USE_WAYPOINT_LABEL}=<name>: its traffic goes through the waypoint`)
    .addOption(new Option('-o, --output <format>', 'print instead of applying').choices(['yaml']))
    .addOption(labOpt())
    .action(async (o: { namespace: string; name: string; for: WaypointFor; serviceAccount?: string; enrollNamespace?: boolean; output?: 'yaml'; lab: string }) => {
      const gw = waypointGateway({ name: o.name, namespace: o.namespace, for: o.for, forServiceAccount: o.serviceAccount });
      if (o.output === 'yaml') {
        process.stdout.write(toYaml([gw]));
        if (o.enrollNamespace) console.error(`to enroll the namespace: kubectl label namespace ${o.namespace} ${USE_WAYPOINT_LABEL}=${o.name} --overwrite`);
        return;
      }
      const layout = new LabLayout(o.lab);
      const objects: object[] = [gw];
      if (o.enrollNamespace) {
        // The namespace as it is, plus the label: applying replaces the object, so keep what it has.
        const st = await labCall<LabState>(layout, 'GET', '/v1/state');
        const ns = st.objects.find((x) => x.kind === 'Namespace' && x.metadata.name === o.namespace);
        if (!ns) throw new Error(`namespace ${o.namespace} does not exist in lab ${o.lab}`);
        const { uid: _u, creationTimestamp: _c, ...metadata } = ns.metadata;
        objects.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { ...metadata, labels: { ...metadata.labels, [USE_WAYPOINT_LABEL]: o.name } } });
      }
      const { results } = await labCall<{ results: ApplyOutcome[] }>(layout, 'POST', '/v1/apply', { objects });
      let bad = 0;
      for (const r of results) {
        if (r.result === 'error') {
          bad++;
          console.error(`error: ${r.object}: ${r.error}`);
        } else console.log(`${r.object.toLowerCase().replace(' ', '/')} ${r.result}`);
      }
      if (bad) process.exitCode = 1;
    });

  waypoint
    .command('list')
    .description('list waypoints and the namespaces, services, pods and service entries that use them')
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .option('-A, --all-namespaces', 'all namespaces')
    .addOption(labOpt())
    .action(async (o: { namespace: string; allNamespaces?: boolean; lab: string }) => {
      const st = await labCall<LabState>(new LabLayout(o.lab), 'GET', '/v1/state');
      console.log(listWaypoints(st, o.allNamespaces ? undefined : o.namespace));
    });
}

/** The `weft waypoint list` table for a lab's state (all namespaces when namespace is undefined). */
export function listWaypoints(st: LabState, namespace: string | undefined, now = Date.now()): string {
  const gateways = st.objects.filter((x) => isWaypointGateway(x) && (namespace === undefined || x.metadata.namespace === namespace));
  if (gateways.length === 0) return namespace === undefined ? 'No waypoints found.' : `No waypoints found in ${namespace} namespace.`;
  const everything = [...st.objects, ...st.services, ...st.pods];
  const rows = gateways
    .sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`))
    .map((g) => {
      const ns = g.metadata.namespace ?? 'default';
      const programmed = (g.status as GatewayStatus | undefined)?.conditions?.find((c) => c.type === 'Programmed')?.status ?? 'Unknown';
      const users = waypointUsers({ name: g.metadata.name, namespace: ns }, everything).map((u) => u.replace(`/${ns}/`, '/'));
      const forSa = g.metadata.annotations?.[FOR_SERVICE_ACCOUNT_ANNOTATION];
      return [
        ...(namespace === undefined ? [ns] : []),
        g.metadata.name,
        g.metadata.labels?.[WAYPOINT_FOR_LABEL] ?? 'service',
        forSa ?? '<namespace>',
        programmed,
        age(g.metadata.creationTimestamp, now),
        users.length ? users.join(',') : '<none>',
      ];
    });
  return table([...(namespace === undefined ? ['NAMESPACE'] : []), 'NAME', 'FOR', 'SERVES', 'PROGRAMMED', 'AGE', 'USED BY'], rows);
}
