// RBAC filter configs shaped as istiod writes them for a waypoint (policy names
// `ns[<ns>]-policy[<name>]-rule[<i>]`, and_rules of or_rules per field, principals as
// authenticated URI SANs), encoded with the control plane's encoder: what the waypoint receives.
import { any, encode } from '../../../src/control/xds/envoy/messages.ts';
import type { EnvoyFilter } from '../../../src/control/xds/envoy/listener-extras.ts';

export const RBAC_HTTP = 'envoy.extensions.filters.http.rbac.v3.RBAC';
export const RBAC_NETWORK = 'envoy.extensions.filters.network.rbac.v3.RBAC';

export type Obj = Record<string, unknown>;

export const policyId = (ns: string, name: string, rule = 0) => `ns[${ns}]-policy[${name}]-rule[${rule}]`;

/** One field's values as Istio writes them: an or_rules of the matchers, inside the rule's and_rules. */
export const orRules = (...rules: Obj[]): Obj => ({ orRules: { rules } });
export const orIds = (...ids: Obj[]): Obj => ({ orIds: { ids } });
export const andRules = (...rules: Obj[]): Obj => ({ andRules: { rules } });
export const andIds = (...ids: Obj[]): Obj => ({ andIds: { ids } });

export const method = (m: string): Obj => ({ header: { name: ':method', stringMatch: { exact: m } } });
export const pathExact = (p: string): Obj => ({ urlPath: { path: { exact: p } } });
export const pathPrefix = (p: string): Obj => ({ urlPath: { path: { prefix: p } } });
export const port = (p: number): Obj => ({ destinationPort: p });
export const source = (uri: string): Obj => ({ authenticated: { principalName: { exact: uri } } });
export const namespace = (ns: string): Obj => ({ authenticated: { principalName: { safeRegex: { regex: `.*/ns/${ns}/.*` } } } });
export const uriTemplate = (t: string): Obj => ({
  uriTemplate: { name: 'uri-template', typedConfig: any('envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig', { pathTemplate: t }) },
});

/** A policy: permissions (one Istio rule's `to`) and principals (its `from`). */
export const policy = (permissions: Obj[], principals: Obj[] = [{ any: true }]): Obj => ({ permissions, principals });

export const rbacConfig = (action: 'ALLOW' | 'DENY' | 'LOG', policies: Record<string, Obj>, extra: Obj = {}): Obj => ({ rules: { action, policies }, ...extra });

export const encodeHttp = (config: Obj) => encode(RBAC_HTTP, config);
export const encodeNetwork = (config: Obj) => encode(RBAC_NETWORK, { statPrefix: 'tcp.', ...config });

export const httpFilter = (config: Obj): EnvoyFilter => ({ name: 'envoy.filters.http.rbac', typedConfig: any(RBAC_HTTP, config) });
export const networkFilter = (config: Obj): EnvoyFilter => ({ name: 'envoy.filters.network.rbac', typedConfig: any(RBAC_NETWORK, { statPrefix: 'tcp.', ...config }) });
