// The mesh model agents work from, decoded from the xDS resources of Istio's workload API
// (istio.workload.Address, istio.security.Authorization). Addresses are strings here; the
// wire form (bytes) lives only in the xDS codec.

export type TunnelProtocol = 'NONE' | 'HBONE';

/**
 * Where a waypoint takes HBONE (Istio's GatewayAddress): its address (the waypoint Service's VIP) or
 * its Service's hostname, and its HBONE port (15008).
 */
export type GatewayAddress = ({ address: string; network: string } | { hostname: { namespace: string; hostname: string } }) & { hboneMtlsPort: number };

export interface PortMapping {
  servicePort: number;
  targetPort: number;
}

export interface Workload {
  uid: string;
  name: string;
  namespace: string;
  addresses: string[];
  network: string;
  tunnelProtocol: TunnelProtocol;
  trustDomain: string;
  serviceAccount: string;
  node: string;
  canonicalName: string;
  canonicalRevision: string;
  workloadType: 'DEPLOYMENT' | 'CRONJOB' | 'POD' | 'JOB';
  workloadName: string;
  /** "namespace/hostname" of each service this workload backs -> its ports there. */
  services: Record<string, PortMapping[]>;
  /** Names ("namespace/name") of the WORKLOAD_SELECTOR policies that select this workload. */
  authorizationPolicies: string[];
  status: 'HEALTHY' | 'UNHEALTHY';
  clusterId: string;
  /** The waypoint that traffic addressed to this workload goes through, if any. */
  waypoint?: GatewayAddress;
}

export interface Service {
  name: string;
  namespace: string;
  hostname: string;
  addresses: string[];
  ports: PortMapping[];
  subjectAltNames: string[];
  /** The waypoint that traffic addressed to this service goes through, if any. */
  waypoint?: GatewayAddress;
}

export type StringMatch = { exact: string } | { prefix: string } | { suffix: string } | { presence: Record<string, never> };

export interface IpBlock {
  address: string;
  length: number;
}

/** Values of one field are OR-ed; different fields are AND-ed. */
export interface Match {
  namespaces?: StringMatch[];
  notNamespaces?: StringMatch[];
  principals?: StringMatch[];
  notPrincipals?: StringMatch[];
  sourceIps?: IpBlock[];
  notSourceIps?: IpBlock[];
  destinationIps?: IpBlock[];
  notDestinationIps?: IpBlock[];
  destinationPorts?: number[];
  notDestinationPorts?: number[];
}

export interface AuthorizationPolicy {
  name: string;
  namespace: string;
  scope: 'GLOBAL' | 'NAMESPACE' | 'WORKLOAD_SELECTOR';
  /** AUDIT is a weft extension: it flags matches in the access log and decides nothing. */
  action: 'ALLOW' | 'DENY' | 'AUDIT';
  /** Rules are OR-ed; clauses of a rule AND-ed; matches of a clause OR-ed. */
  rules: { clauses: { matches: Match[] }[] }[];
}

export const policyKey = (p: { namespace: string; name: string }) => `${p.namespace}/${p.name}`;
