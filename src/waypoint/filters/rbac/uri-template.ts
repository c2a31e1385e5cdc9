// Envoy's uri_template path matcher (envoy.path.match.uri_template.v3.UriTemplateMatchConfig), as
// Istio writes it for `{*}` and `{**}` in AuthorizationPolicy paths: the path (no query) must match
// the whole template. `*` (or `{name}`, `{name=*}`) is one path segment of one or more path
// characters; `**` (or `{name=**}`) is zero or more characters including `/`, allowed only as the
// last operator; literals are path characters. Compiled once into an anchored regex made of these
// pieces only (no user regex, nothing that backtracks badly).

/** RFC 3986 pchar as Envoy's template reads it (unreserved, pct-encoded, sub-delims but `*`, `:`, `@`). */
const PCHAR = "a-zA-Z0-9\\-._~%!$&'()+,;:@=";
const LITERAL = /^[a-zA-Z0-9\-._~%!$&'()+,;:@=]*$/;
const MAX_TEMPLATE = 256;

export function uriTemplateMatcher(template: unknown, field: string): (path: string) => boolean {
  if (typeof template !== 'string' || !template) throw new Error(`${field}.path_template: empty`);
  if (template.length > MAX_TEMPLATE) throw new Error(`${field}.path_template: longer than ${MAX_TEMPLATE} characters`);
  if (!template.startsWith('/')) throw new Error(`${field}.path_template: ${template} does not start with /`);
  const segments = template.slice(1).split('/');
  let source = '';
  let textGlob = false;
  const names = new Set<string>();
  for (const seg of segments) {
    if (textGlob) throw new Error(`${field}.path_template: ${template}: ** must be the last operator`);
    source += '/';
    let op = seg;
    const v = /^\{([a-zA-Z][a-zA-Z0-9_]*)(?:=(.*))?\}$/.exec(seg);
    if (v) {
      if (names.has(v[1]!)) throw new Error(`${field}.path_template: ${template}: variable ${v[1]} repeated`);
      names.add(v[1]!);
      op = v[2] ?? '*';
      if (op.includes('/')) throw new Error(`${field}.path_template: ${template}: multi-segment variables are not supported`);
    }
    if (op === '*') source += `[${PCHAR}]+`;
    else if (op.startsWith('**')) {
      const suffix = op.slice(2);
      if (!LITERAL.test(suffix)) throw new Error(`${field}.path_template: ${template}: invalid literal ${suffix}`);
      source += `[${PCHAR}/]*${escape(suffix)}`;
      textGlob = true;
    } else if (v || !LITERAL.test(op)) {
      throw new Error(`${field}.path_template: ${template}: invalid segment ${seg}`);
    } else source += escape(op);
  }
  const re = new RegExp(`^${source}$`);
  return (path) => re.test(path);
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
