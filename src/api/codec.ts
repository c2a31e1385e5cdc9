// The mesh model <-> the wire messages of Istio's workload API. Only here are addresses bytes.
import { isIP } from 'node:net';
import { TYPE_ADDRESS, TYPE_AUTHORIZATION, meshTypes } from './protos.ts';
import type { AuthorizationPolicy, GatewayAddress, IpBlock, Match, Service, Workload } from './mesh.ts';

/** Text -> 4 or 16 bytes. Accepts every RFC 4291 form, including an embedded dotted quad. */
export function ipToBytes(ip: string): Buffer {
  const family = isIP(ip);
  if (family === 4) return Buffer.from(ip.split('.').map(Number));
  if (family === 6) {
    if (ip.includes('%')) throw new Error(`not an IP address: "${ip}" (zone ids have no place in the workload API)`);
    let text = ip;
    const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
    if (quad) {
      const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number];
      text = `${text.slice(0, quad.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
    }
    const [head, tail] = text.split('::') as [string, string | undefined];
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
    const b = Buffer.alloc(16);
    groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
    return b;
  }
  throw new Error(`not an IP address: "${ip}"`);
}

/**
 * 4 or 16 bytes -> text, in the one form the agent also gets from its sockets (Node's, i.e.
 * libuv's inet_ntop), so addresses from the workload API and from the kernel compare as strings.
 * RFC 5952: lowercase, no leading zeros, the longest run of two or more zero groups (the first of
 * equal runs) becomes "::", a single zero group is not compressed, and IPv4-mapped addresses end
 * in a dotted quad (::ffff:a.b.c.d); like libuv, so does the deprecated IPv4-compatible ::a.b.c.d.
 */
export function bytesToIp(b: Uint8Array): string {
  if (b.length === 4) return [...b].join('.');
  if (b.length !== 16) throw new Error(`address of ${b.length} bytes`);
  const g = Array.from({ length: 8 }, (_, i) => (b[2 * i]! << 8) | b[2 * i + 1]!);
  let base = -1;
  let len = 0;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > len) [base, len] = [i, j - i];
    i = j > i ? j : i + 1;
  }
  if (len < 2) return g.map((x) => x.toString(16)).join(':');
  if (base === 0 && (len === 6 || (len === 5 && g[5] === 0xffff))) return `::${len === 5 ? 'ffff:' : ''}${[...b.subarray(12)].join('.')}`;
  const hex = (from: number, to: number) => g.slice(from, to).map((x) => x.toString(16)).join(':');
  return `${hex(0, base)}::${hex(base + len, 8)}`;
}

/** The one text of an address (what bytesToIp prints and sockets report); throws if it is none. */
export const canonicalIp = (ip: string) => bytesToIp(ipToBytes(ip));

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

const wireGateway = (g: GatewayAddress | undefined) =>
  g === undefined ? undefined : 'address' in g ? { address: { network: g.network, address: ipToBytes(g.address) }, hboneMtlsPort: g.hboneMtlsPort } : { hostname: g.hostname, hboneMtlsPort: g.hboneMtlsPort };

/** A decoded GatewayAddress; undefined when absent, or when it names neither an address nor a hostname. */
function modelGateway(g: Record<string, unknown> | null | undefined): GatewayAddress | undefined {
  if (!g) return undefined;
  const hboneMtlsPort = Number(g.hboneMtlsPort ?? 0);
  const address = g.address as { network?: string; address?: Uint8Array } | undefined;
  if (g.destination === 'address' && address?.address?.length) return { address: bytesToIp(address.address), network: address.network ?? '', hboneMtlsPort };
  const hostname = g.hostname as { namespace?: string; hostname?: string } | undefined;
  if (g.destination === 'hostname' && hostname?.hostname) return { hostname: { namespace: hostname.namespace ?? '', hostname: hostname.hostname }, hboneMtlsPort };
  return undefined;
}

export function encodeWorkload(w: Workload): Uint8Array {
  const { Address } = meshTypes();
  return Address.encode(
    Address.fromObject({ workload: { ...w, addresses: w.addresses.map(ipToBytes), services: Object.fromEntries(Object.entries(w.services).map(([k, ports]) => [k, { ports }])), waypoint: wireGateway(w.waypoint) } }),
  ).finish();
}

export function encodeService(s: Service): Uint8Array {
  const { Address } = meshTypes();
  return Address.encode(Address.fromObject({ service: { ...s, addresses: s.addresses.map((a) => ({ network: '', address: ipToBytes(a) })), waypoint: wireGateway(s.waypoint) } })).finish();
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
    const { waypoint, ...w } = o.workload;
    const gw = modelGateway(waypoint as Record<string, unknown> | null);
    return {
      workload: {
        ...(w as unknown as Workload),
        addresses: (w.addresses as Uint8Array[]).map(bytesToIp),
        services: Object.fromEntries(Object.entries(w.services as Record<string, { ports: Workload['services'][string] }>).map(([k, v]) => [k, v.ports])),
        ...(gw ? { waypoint: gw } : {}),
      },
    };
  }
  if (o.type === 'service' && o.service) {
    const { waypoint, ...s } = o.service;
    const gw = modelGateway(waypoint as Record<string, unknown> | null);
    return { service: { ...(s as unknown as Service), addresses: (s.addresses as { address: Uint8Array }[]).map((a) => bytesToIp(a.address)), ...(gw ? { waypoint: gw } : {}) } };
  }
  throw new Error('Address with neither workload nor service');
}

export function decodeAuthorization(buf: Uint8Array): AuthorizationPolicy {
  const { Authorization } = meshTypes();
  const o = Authorization.toObject(Authorization.decode(buf), TO_OBJECT) as AuthorizationPolicy & { rules: { clauses: { matches: Record<string, unknown>[] }[] }[] };
  return { name: o.name, namespace: o.namespace, scope: o.scope, action: o.action, rules: o.rules.map((r) => ({ clauses: r.clauses.map((c) => ({ matches: (c.matches as unknown as Record<string, unknown>[]).map(modelMatch) })) })) };
}

export { TYPE_ADDRESS, TYPE_AUTHORIZATION };
