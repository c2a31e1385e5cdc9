// The request path as filters (RBAC) and routes see it, and as it goes upstream: what Envoy does
// with normalize_path (RFC 3986 6.2.2: percent-encoded unreserved characters decoded, dot segments
// removed) plus merge_slashes (Istio's MERGE_SLASHES path normalization), so that a DENY on /admin
// is not bypassed by /./admin, //admin, /%61dmin or /a/../admin. Backslashes are read as slashes
// (Envoy's canonicalizer does so too). Escaped slashes (%2F, %5C) are left as they are, Envoy's
// default path_with_escaped_slashes_action (KEEP_UNCHANGED). The query is never touched.

/** A byte that is not ALPHA / DIGIT / - . _ ~ stays escaped; these are decoded. */
const unreserved = (c: number): boolean =>
  (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e;

const hex = (c: number): number => (c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x41 && c <= 0x46 ? c - 0x37 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1);

/** Whether the path needs the slow pass: a `%`, a `\`, `//`, or a `.` segment. Allocates nothing. */
function suspicious(p: string): boolean {
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i);
    if (c === 0x25 || c === 0x5c) return true; // % \
    if (c === 0x2f) {
      const n = p.charCodeAt(i + 1);
      if (n === 0x2f) return true; // //
      if (n === 0x2e) {
        const m = p.charCodeAt(i + 2);
        if (Number.isNaN(m) || m === 0x2f || m === 0x3f || (m === 0x2e && (i + 3 === p.length || p.charCodeAt(i + 3) === 0x2f))) return true; // /. /./ /.. /../
      }
    }
  }
  return false;
}

/** The normalized path (no query); the same string when it is already normal. */
export function normalizePath(path: string): string {
  if (!path.startsWith('/') || !suspicious(path)) return path;
  let decoded = '';
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === 0x25 && i + 2 < path.length) {
      const v = hex(path.charCodeAt(i + 1)) * 16 + hex(path.charCodeAt(i + 2));
      if (hex(path.charCodeAt(i + 1)) >= 0 && hex(path.charCodeAt(i + 2)) >= 0 && unreserved(v)) {
        decoded += String.fromCharCode(v);
        i += 2;
        continue;
      }
    }
    decoded += c === 0x5c ? '/' : path[i];
  }
  // Merge slashes, then remove dot segments (RFC 3986 5.2.4) over the segments.
  const out: string[] = [];
  const segments = decoded.split('/');
  for (let i = 1; i < segments.length; i++) {
    const s = segments[i]!;
    const last = i === segments.length - 1;
    if (s === '.' || s === '..') {
      if (s === '..') out.pop();
      if (last) out.push(''); // `/a/..` is `/`, `/a/.` is `/a/`
      continue;
    }
    if (s === '' && !last) continue; // an empty segment: merged slashes
    out.push(s);
  }
  return `/${out.join('/')}`;
}

/** A request target (path and query) normalized; the same string when nothing changes. */
export function normalizeUrl(url: string): string {
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const n = normalizePath(path);
  return n === path ? url : q < 0 ? n : n + url.slice(q);
}
