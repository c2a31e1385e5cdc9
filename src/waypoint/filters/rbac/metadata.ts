// Envoy's MetadataMatcher over the request's dynamic metadata (FilterRequest.metadata: by filter
// namespace, e.g. `istio_authn` from the JWT filter): the value at `path` (successive struct keys)
// matched by a ValueMatcher, then inverted if asked. A missing value (Envoy's KIND_NOT_SET) matches
// no ValueMatcher (present_match false does not match it either; null_match needs an explicit null),
// so only an inverted matcher takes it. JS values are protobuf Value kinds: string, number,
// boolean, null, array (list), object (struct).
import type { Msg } from '../../xds/envoy.ts';
import { stringMatcher } from '../../xds/string-matcher.ts';
import type { Matcher } from '../../router/table.ts';

type ValuePred = (v: unknown) => boolean;

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);

/** The one field a oneof decoded to (decodeEnvoy adds the oneof's name), or a refusal naming it. */
export function oneof(m: Msg, oneofName: string, field: string): string {
  const which = m[oneofName];
  if (typeof which !== 'string') throw new Error(`${field}: empty (no ${oneofName} set)`);
  return which;
}

/** Envoy's ValueMatcher. */
export function valueMatcher(m: Msg, field: string): ValuePred {
  const kind = oneof(m, 'matchPattern', field);
  const at = `${field}.${snake(kind)}`;
  switch (kind) {
    case 'nullMatch':
      return (v) => v === null;
    case 'stringMatch': {
      const match: Matcher = stringMatcher(obj(m.stringMatch) ?? {}, at);
      return (v) => typeof v === 'string' && match(v);
    }
    case 'boolMatch': {
      const want = m.boolMatch === true;
      return (v) => v === want;
    }
    case 'presentMatch': {
      const want = m.presentMatch === true;
      return (v) => want && v !== undefined;
    }
    case 'doubleMatch': {
      const d = obj(m.doubleMatch) ?? {};
      const range = obj(d.range);
      if (range) {
        const start = Number(range.start ?? 0);
        const end = Number(range.end ?? 0);
        return (v) => typeof v === 'number' && v >= start && v < end;
      }
      if (typeof d.exact === 'number') {
        const exact = d.exact;
        return (v) => v === exact;
      }
      if (d.matchPattern === 'exact') return (v) => v === 0;
      throw new Error(`${at}: empty`);
    }
    case 'listMatch': {
      const l = obj(m.listMatch) ?? {};
      const one = obj(l.oneOf);
      if (!one) throw new Error(`${at}.one_of: empty`);
      const item = valueMatcher(one, `${at}.one_of`);
      // A string is read as a list of itself: claims are kept as in the token (a string or a list,
      // the istio_authn contract) while Istio matches claims with list_match, so a DENY on a claim
      // that is a string in this token must still match it (fail closed).
      return (v) => (Array.isArray(v) ? v.some(item) : typeof v === 'string' && item(v));
    }
    case 'orMatch': {
      const ms = (obj(m.orMatch)?.valueMatchers as Msg[] | undefined) ?? [];
      if (ms.length < 2) throw new Error(`${at}.value_matchers: fewer than 2`);
      const preds = ms.map((x, i) => valueMatcher(x, `${at}.value_matchers[${i}]`));
      return (v) => preds.some((p) => p(v));
    }
    default:
      throw new Error(`${at}: not supported by the waypoint`);
  }
}

const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/**
 * Envoy's MetadataMatcher: (metadata by namespace) => whether it matches. Path keys are own
 * properties only (a claim named `constructor` is not Object's).
 */
export function metadataMatcher(m: Msg, field: string): (md: ReadonlyMap<string, Record<string, unknown>> | undefined) => boolean {
  for (const k of Object.keys(m)) if (!['filter', 'path', 'value', 'invert'].includes(k)) throw new Error(`${field}.${snake(k)}: not supported by the waypoint`);
  const filter = typeof m.filter === 'string' ? m.filter : '';
  if (!filter) throw new Error(`${field}.filter: empty`);
  const path = ((m.path as Msg[] | undefined) ?? []).map((p, i) => {
    if (typeof p.key !== 'string' || !p.key) throw new Error(`${field}.path[${i}].key: empty`);
    return p.key;
  });
  if (!path.length) throw new Error(`${field}.path: empty`);
  const value = obj(m.value);
  if (!value) throw new Error(`${field}.value: empty`);
  const match = valueMatcher(value, `${field}.value`);
  const invert = m.invert === true;
  return (md) => {
    let v: unknown = md?.get(filter);
    for (const key of path) {
      const o = obj(v);
      v = o && Object.hasOwn(o, key) ? o[key] : undefined;
    }
    return match(v) !== invert;
  };
}
