// Shared reading and validation for the traffic-management kinds (VirtualService, DestinationRule,
// ServiceEntry, HTTPRoute, GRPCRoute). Every problem names the field; a problem marked fatal makes
// the whole object invalid (it is skipped), others only report a part that weft ignores.
import type { KObject } from '../../../kube/objects.ts';
import { regexProblem } from '../../../util/regex-guard.ts';
import type { MeshOptions } from './workloads.ts';

export interface NetworkingProblem {
  kind: string;
  namespace: string;
  name: string;
  field: string;
  reason: string;
}

export const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Collects problems for one object and whether any of them invalidates it. */
export class Checker {
  readonly problems: NetworkingProblem[] = [];
  fatal = false;

  constructor(private readonly target: KObject) {}

  /** An invalid field: the object is skipped. */
  error(field: string, reason: string): undefined {
    this.fatal = true;
    this.problems.push(this.at(field, reason));
    return undefined;
  }

  /** A valid but unsupported field: reported and ignored, the object is kept. */
  ignored(field: string, reason = 'not supported by weft: ignored'): void {
    this.problems.push(this.at(field, reason));
  }

  private at(field: string, reason: string): NetworkingProblem {
    return { kind: this.target.kind, namespace: this.target.metadata.namespace ?? '', name: this.target.metadata.name, field, reason };
  }

  str(v: unknown, field: string, required = false): string | undefined {
    if (v === undefined || v === null) return required ? this.error(field, 'required') : undefined;
    if (typeof v !== 'string' || (required && v === '')) return this.error(field, 'expected a non-empty string');
    return v;
  }

  int(v: unknown, field: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) return this.error(field, `expected an integer in [${min}, ${max}]`);
    return v;
  }

  num(v: unknown, field: string, min: number, max: number): number | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) return this.error(field, `expected a number in [${min}, ${max}]`);
    return v;
  }

  /** A Go/Gateway-API style duration ("1.5s", "100ms", "1h30m") in milliseconds. */
  duration(v: unknown, field: string): number | undefined {
    if (v === undefined || v === null) return undefined;
    const ms = typeof v === 'string' ? parseDuration(v) : undefined;
    return ms === undefined ? this.error(field, `invalid duration ${JSON.stringify(v)} (e.g. "500ms", "2s", "1m")`) : ms;
  }

  list(v: unknown, field: string): unknown[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) {
      this.error(field, 'expected a list');
      return [];
    }
    return v;
  }

  obj(v: unknown, field: string): Record<string, unknown> | undefined {
    if (v === undefined || v === null) return undefined;
    return isObj(v) ? v : this.error(field, 'expected an object');
  }

  /** Reports fields outside `known` as ignored. */
  known(o: Record<string, unknown>, field: string, known: readonly string[]): void {
    for (const k of Object.keys(o)) if (!known.includes(k)) this.ignored(`${field}.${k}`);
  }

  regex(v: string, field: string): string | undefined {
    const why = regexProblem(v);
    if (why) return this.error(field, `regular expression refused: ${why}`);
    try {
      new RegExp(v);
      return v;
    } catch (e) {
      return this.error(field, `invalid regular expression: ${(e as Error).message}`);
    }
  }

  labels(v: unknown, field: string): Record<string, string> | undefined {
    if (v === undefined || v === null) return undefined;
    if (!isObj(v) || Object.values(v).some((x) => typeof x !== 'string')) return this.error(field, 'expected a map of string labels');
    return v as Record<string, string>;
  }
}

const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, µs: 0.001, ns: 0.000001 };

export function parseDuration(s: string): number | undefined {
  if (!/^(\d+(\.\d+)?(h|ms|m|s|us|µs|ns))+$/.test(s)) return undefined;
  let ms = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)/g)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  return ms;
}

/**
 * Istio host semantics: a short name ("reviews") means a service in the object's namespace; any
 * name with a dot is taken as written.
 */
export function qualifyHost(host: string, namespace: string, o: MeshOptions): string {
  return host.includes('.') ? host : `${host}.${namespace}.svc.${o.clusterDomain}`;
}

export { DNS1123_LABEL } from '../../../kube/names.ts';
