// Name resolution for lab pods through files `ip netns exec` binds over /etc: every service is
// listed under the names a pod in a given namespace can use (`svc` only for its own namespace,
// `svc.ns`, `svc.ns.svc`, and the full `svc.ns.svc.cluster.local`), so any resolver works.
import { CLUSTER_DOMAIN } from './layout.ts';

export interface NamedService {
  name: string;
  namespace: string;
  clusterIP: string;
}

export function renderHosts(pod: { name: string; ip: string; namespace: string }, services: NamedService[]): string {
  const lines = ['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback', `${pod.ip}\t${pod.name}`];
  for (const s of [...services].sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`))) {
    const full = `${s.name}.${s.namespace}.svc.${CLUSTER_DOMAIN}`;
    const names = [full, `${s.name}.${s.namespace}.svc`, `${s.name}.${s.namespace}`];
    if (s.namespace === pod.namespace) names.push(s.name);
    lines.push(`${s.clusterIP}\t${names.join(' ')}`);
  }
  return lines.join('\n') + '\n';
}

export function renderResolvConf(namespace: string): string {
  // No nameserver: the lab has no DNS server, and lookups that miss the hosts file fail fast.
  return `search ${namespace}.svc.${CLUSTER_DOMAIN} svc.${CLUSTER_DOMAIN} ${CLUSTER_DOMAIN}\noptions ndots:5\nnameserver 127.0.0.53\n`;
}
