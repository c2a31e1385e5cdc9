// envoy.filters.http.ext_authz at the waypoint: Istio's CUSTOM action. For a request its
// filter_enabled_metadata selects (the CUSTOM policy's rules matched, as the RBAC shadow engine
// records), the external authorizer decides (check.ts): allowed, the request goes on with the
// authorizer's header edits (upstream and to the client); denied, the client gets the authorizer's
// status, headers and body (flags UAEX, details ext_authz_denied). When the call fails, the request
// goes on under failure_mode_allow (with x-envoy-auth-failure-mode-allowed when configured), else
// it is answered status_on_error (403 by default; flags UAEX, details ext_authz_error).
import type { FilterReply, FilterRequest, HttpFilter } from '../chain.ts';
import { STAGE } from '../chain.ts';
import type { Logger } from 'pino';
import type { ServiceChannels } from './channels.ts';
import type { Msg } from '../../xds/envoy.ts';
import { check, editRecord, type CheckBody } from './check.ts';
import { compileExtAuthz, type ExtAuthzConfig } from './config.ts';
import { CallError } from './exchange.ts';

export const EXT_AUTHZ_FILTER = 'envoy.filters.http.ext_authz';
/** The dynamic metadata namespace an authorizer's dynamic_metadata lands in (Envoy's filter name). */
export const EXT_AUTHZ_METADATA = EXT_AUTHZ_FILTER;

/** Pseudo-headers and Host are not the authorizer's to edit (as Envoy), nor the message framing. */
const FRAMING = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'trailer']);
const KEPT = (k: string) => k.startsWith(':') || FRAMING.has(k);

/** What the filter uses of registry.ts's FilterEnv (read at each request: the Waypoint fills it after compiling starts). */
interface Env {
  log?: Logger;
  services?: ServiceChannels;
}

export function compileExtAuthzFilter(m: Msg, field: string, env: Env): HttpFilter {
  const c = compileExtAuthz(m, field);
  return { name: EXT_AUTHZ_FILTER, stage: STAGE.custom, decode: (r) => decode(c, env, r) };
}

async function decode(c: ExtAuthzConfig, env: Env, r: FilterRequest): Promise<FilterReply | undefined> {
  if (c.enabled && !c.enabled(r.metadata)) return undefined;
  // with_request_body: the body (up to the limit) first; past it, Envoy's 413 unless a part may go.
  let body: CheckBody | undefined;
  if (c.withBody && r.body) {
    const b = await r.body(c.withBody.maxBytes);
    if (r.signal?.aborted) return { status: 0, body: '', flags: 'DC', details: 'downstream_remote_disconnect' };
    if (!b.complete && !c.withBody.allowPartial) return { status: 413, body: 'Payload Too Large', flags: '-', details: 'request_payload_too_large' };
    body = { bytes: b.bytes, partial: !b.complete };
  }
  try {
    if (!env.services) throw new Error('the waypoint has no channels to the authorizer yet');
    const d = await check(c, env.services, r, r.signal, body);
    if (d.kind === 'denied') {
      const headers = Object.fromEntries(Object.entries(d.headers).filter(([k]) => !KEPT(k)));
      return { status: d.status, body: d.body, flags: 'UAEX', details: 'ext_authz_denied', headers };
    }
    for (const e of d.upstream) if (!KEPT(e.name)) editRecord(r.headers, e);
    for (const k of d.remove) if (!KEPT(k)) delete r.headers[k];
    if (d.response.length) {
      const response: Record<string, string> = (r.responseHeaders ??= {});
      for (const e of d.response) editRecord(response, e);
    }
    if (d.metadata && c.ingestMetadata) r.metadata.set(EXT_AUTHZ_METADATA, d.metadata);
    return undefined;
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    if (e instanceof CallError && e.kind === 'cancelled') return { status: 0, body: '', flags: 'DC', details: 'downstream_remote_disconnect' };
    env.log?.debug({ err: why, cluster: c.service.cluster }, 'ext_authz call failed');
    if (c.failureModeAllow) {
      if (c.failureModeAllowHeaderAdd) r.headers['x-envoy-auth-failure-mode-allowed'] = 'true';
      return undefined;
    }
    return { status: c.statusOnError, body: '', flags: 'UAEX', details: 'ext_authz_error' };
  }
}
