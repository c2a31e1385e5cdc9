// networking.istio.io ServiceEntry -> extra hosts for the mesh: their ports, and endpoints given
// inline (STATIC/DNS) or selected from pods by `workloadSelector`.
import { isIP } from 'node:net';
import type { KObject } from '../../../kube/objects.ts';
import { Checker, type NetworkingProblem } from './common.ts';
import type { MeshOptions } from './workloads.ts';

export interface ServiceEntryModel {
  source: string;
  namespace: string;
  hosts: string[];
  ports: { number: number; name: string; targetPort?: number; protocol?: string }[];
  resolution: 'NONE' | 'STATIC' | 'DNS' | 'DNS_ROUND_ROBIN';
  endpoints: { address: string; ports: Record<string, number>; labels: Record<string, string> }[];
  selector?: Record<string, string>;
}

/** Istio's ServiceEntry port protocols (case-insensitive, as Istio parses them). */
const SE_PROTOCOLS = ['HTTP', 'HTTPS', 'GRPC', 'GRPC-WEB', 'HTTP2', 'MONGO', 'MYSQL', 'REDIS', 'TCP', 'TLS', 'UDP'];
const RESOLUTIONS = ['NONE', 'STATIC', 'DNS', 'DNS_ROUND_ROBIN'] as const;

export function parseServiceEntry(obj: KObject, _o: MeshOptions): { entry?: ServiceEntryModel; problems: NetworkingProblem[] } {
  const c = new Checker(obj);
  const ns = obj.metadata.namespace ?? 'default';
  const spec = c.obj(obj.spec, 'spec') ?? {};
  c.known(spec, 'spec', ['hosts', 'addresses', 'ports', 'location', 'resolution', 'endpoints', 'workloadSelector', 'exportTo', 'subjectAltNames']);
  const hosts = c.list(spec.hosts, 'spec.hosts').flatMap((h, i) => c.str(h, `spec.hosts[${i}]`, true) ?? []);
  if (!hosts.length) c.error('spec.hosts', 'at least one host is required');
  for (const [i, h] of hosts.entries()) if (h.includes('*')) c.error(`spec.hosts[${i}]`, 'wildcard hosts are not supported by weft');
  const resolution = (spec.resolution ?? 'NONE') as ServiceEntryModel['resolution'];
  if (!RESOLUTIONS.includes(resolution)) c.error('spec.resolution', `expected one of ${RESOLUTIONS.join(', ')}`);
  const ports: ServiceEntryModel['ports'] = [];
  for (const [i, raw] of c.list(spec.ports, 'spec.ports').entries()) {
    const f = `spec.ports[${i}]`;
    const p = c.obj(raw, f);
    if (!p) continue;
    const number = c.int(p.number, `${f}.number`, 1, 65535);
    const name = c.str(p.name, `${f}.name`, true);
    const targetPort = c.int(p.targetPort, `${f}.targetPort`, 1, 65535);
    if (p.number === undefined) c.error(`${f}.number`, 'required');
    const protocol = c.str(p.protocol, `${f}.protocol`, false);
    if (protocol !== undefined && !SE_PROTOCOLS.includes(protocol.toUpperCase())) c.error(`${f}.protocol`, `expected one of ${SE_PROTOCOLS.join(', ')}`);
    if (number && name) ports.push({ number, name, targetPort, protocol });
  }
  if (!ports.length) c.error('spec.ports', 'at least one port is required');
  const endpoints: ServiceEntryModel['endpoints'] = [];
  for (const [i, raw] of c.list(spec.endpoints, 'spec.endpoints').entries()) {
    const f = `spec.endpoints[${i}]`;
    const e = c.obj(raw, f);
    if (!e) continue;
    const address = c.str(e.address, `${f}.address`, true);
    if (address && resolution === 'STATIC' && !isIP(address)) c.error(`${f}.address`, 'STATIC resolution needs IP addresses');
    const eports = c.obj(e.ports, `${f}.ports`) ?? {};
    for (const [k, v] of Object.entries(eports)) c.int(v, `${f}.ports.${k}`, 1, 65535);
    if (address) endpoints.push({ address, ports: eports as Record<string, number>, labels: c.labels(e.labels, `${f}.labels`) ?? {} });
  }
  const ws = c.obj(spec.workloadSelector, 'spec.workloadSelector');
  const selector = ws ? c.labels(ws.labels, 'spec.workloadSelector.labels') : undefined;
  if (selector && endpoints.length) c.error('spec.workloadSelector', 'endpoints and workloadSelector are mutually exclusive');
  if (resolution === 'STATIC' && !endpoints.length && !selector) c.error('spec.endpoints', 'STATIC resolution needs endpoints or a workloadSelector');
  if (c.fatal) return { problems: c.problems };
  return { entry: { source: `ServiceEntry/${ns}/${obj.metadata.name}`, namespace: ns, hosts, ports, resolution, endpoints, selector }, problems: c.problems };
}
