// Resource names as Istio spells them, so tooling and habits carry over.

/** A listener (and its RouteConfiguration) per service port: what `xds:///host:port` resolves. */
export const listenerName = (host: string, port: number) => `${host}:${port}`;

/** `outbound|<port>|<subset>|<host>`: the subset part is empty for the whole service. */
export const clusterName = (host: string, port: number, subset = '') => `outbound|${port}|${subset}|${host}`;
