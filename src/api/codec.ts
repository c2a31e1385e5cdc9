// The mesh model <-> the wire messages of Istio's workload API. Only here are addresses bytes.
import { isIP } from 'node:net';
import { TYPE_ADDRESS, TYPE_AUTHORIZATION, meshTypes } from './protos.ts';
import type { AuthorizationPolicy, IpBlock, Match, Service, Workload } from './mesh.ts';

export function ipToBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split('.').map(Number));
  if (isIP(ip) === 6) {
    const [head, tail] = ip.split('::') as [string, string | undefined];
    const h = head ? head.split(':') : [];
    const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
    const b = Buffer.alloc(16);
    groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
    return b;
  }
  throw new Error(`not an IP address: "${ip}"`);
}

export function bytesToIp(b: Uint8Array): string {
  if (b.length === 4) return [...b].join('.');
  if (b.length === 16) {
    const g: string[] = [];
    for (let i = 0; i < 16; i += 2) g.push(((b[i]! << 8) | b[i + 1]!).toString(16));
    return g.join(':').replace(/(^|:)0(:0)+(:|$)/, '::').replace(/:{3,}/, '::');
  }
  throw new Error(`address of ${b.length} bytes`);
}

const wireBlock = (b: IpBlock) => ({ address: ipToBytes(b.address), length: b.length });
const modelBlock = (b: { address: Uint8Array; length: number }): IpBlock => ({ address: bytesToIp(b.address), length: b.length });

function wireMatch(m: Match) {
  return {
    ...m,
    sourceIps: m.sourceIps?.map(wireBlock),
    notSourceIps: m.notSourceIps?.map(wireBlock),
    destinationIps: m.destinationIps?.map(wireBlock),
    notDestinationIps: m.notDestinationIps?.map(wireBlock),
  };
}

type WireBlock = { address: Uint8Array; length: number };
function modelMatch(m: Record<string, unknown>): Match {
  const out: Match = {};
  for (const [k, v] of Object.entries(m)) {
    if (!Array.isArray(v) || v.length === 0) continue;
    if (k.endsWith('Ips') || k.endsWith('IPs')) (out as Record<string, unknown>)[k] = (v as WireBlock[]).map(modelBlock);
    else (out as Record<string, unknown>)[k] = v.map((x: Record<string, unknown>) => (typeof x === 'object' && x !== null && 'matchType' in x ? stripOneof(x) : x));
  }
  return out;
}

function stripOneof(x: Record<string, unknown>) {
  const { matchType, ...rest } = x;
  return matchType === 'presence' ? { presence: {} } : rest;
}

export function encodeWorkload(w: Workload): Uint8Array {
  const { Address } = meshTypes();
  return Address.encode(Address.fromObject({ workload: { ...w, addresses: w.addresses.map(ipToBytes), services: Object.fromEntries(Object.entries(w.services).map(([k, ports]) => [k, { ports }])) } })).finish();
}

export function encodeService(s: Service): Uint8Array {
  const { Address } = meshTypes();
  return Address.encode(Address.fromObject({ service: { ...s, addresses: s.addresses.map((a) => ({ network: '', address: ipToBytes(a) })) } })).finish();
}

export function encodeAuthorization(p: AuthorizationPolicy): Uint8Array {
  const { Authorization } = meshTypes();
  const wire = { ...p, rules: p.rules.map((r) => ({ clauses: r.clauses.map((c) => ({ matches: c.matches.map(wireMatch) })) })) };
  return Authorization.encode(Authorization.fromObject(wire)).finish();
}

const TO_OBJECT = { enums: String, longs: Number, defaults: true, arrays: true, objects: true, oneofs: true } as const;

export function decodeAddress(buf: Uint8Array): { workload: Workload } | { service: Service } {
  const { Address } = meshTypes();
  const o = Address.toObject(Address.decode(buf), TO_OBJECT) as { type?: string; workload?: Record<string, unknown>; service?: Record<string, unknown> };
  if (o.type === 'workload' && o.workload) {
    const w = o.workload;
    return {
      workload: {
        ...(w as unknown as Workload),
        addresses: (w.addresses as Uint8Array[]).map(bytesToIp),
        services: Object.fromEntries(Object.entries(w.services as Record<string, { ports: Workload['services'][string] }>).map(([k, v]) => [k, v.ports])),
      },
    };
  }
  if (o.type === 'service' && o.service) {
    const s = o.service;
    return { service: { ...(s as unknown as Service), addresses: (s.addresses as { address: Uint8Array }[]).map((a) => bytesToIp(a.address)) } };
  }
  throw new Error('Address with neither workload nor service');
}

export function decodeAuthorization(buf: Uint8Array): AuthorizationPolicy {
  const { Authorization } = meshTypes();
  const o = Authorization.toObject(Authorization.decode(buf), TO_OBJECT) as AuthorizationPolicy & { rules: { clauses: { matches: Record<string, unknown>[] }[] }[] };
  return { name: o.name, namespace: o.namespace, scope: o.scope, action: o.action, rules: o.rules.map((r) => ({ clauses: r.clauses.map((c) => ({ matches: (c.matches as unknown as Record<string, unknown>[]).map(modelMatch) })) })) };
}

export { TYPE_ADDRESS, TYPE_AUTHORIZATION };
