// The waypoint's L7 zero trust and tracing in the lab (issue #16), each through a real waypoint pod
// between two agents, with clients that are not weft's own (curl): an L7 AuthorizationPolicy
// attached to a Service, JWT RequestAuthentication against a JWKS served by a pod over HTTPS (and
// rotated), a CUSTOM policy asking a gRPC external authorizer written on Envoy's protos, and OTLP
// spans decoded by a collector pod.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OtlpReceiver } from '../telemetry/otlp-receiver.ts';
import { getJson, labName, leftovers, podExec, until as untilEvery, weft } from './helpers.ts';

const FIXTURES = new URL('./fixtures/', import.meta.url).pathname;
const REPO = new URL('../../', import.meta.url).pathname;
const lab = labName('wsec');
const ISSUER = 'https://issuer.bank.example';
const until = (f: () => boolean, ms: number, what: string) => untilEvery(f, ms, what, 500);

type PodJ = { metadata: { name: string; labels?: Record<string, string> }; status: { podIP: string } };
const waypointIP = () => getJson<PodJ>(lab, 'pods', 'bank').find((p) => p.metadata.labels?.['gateway.networking.k8s.io/gateway-name'] === 'waypoint')?.status.podIP;
const waypointMetrics = () => spawnSync('ip', ['netns', 'exec', `${lab}.node-0`, 'curl', '-s', '-m', '5', `http://${waypointIP()}:15020/metrics`], { encoding: 'utf8' }).stdout;
const requestsTotal = (match: Record<string, string>) =>
  waypointMetrics()
    .split('\n')
    .filter((l) => l.startsWith('istio_requests_total{') && l.includes('reporter="waypoint"') && Object.entries(match).every(([k, v]) => l.includes(`${k}="${v}"`)))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
const waypointLog = () => {
  const pod = getJson<PodJ>(lab, 'pods', 'bank').find((p) => p.metadata.labels?.['gateway.networking.k8s.io/gateway-name'] === 'waypoint')!.metadata.name;
  return weft(['logs', '--name', lab, `bank/${pod}`]).stdout;
};

/** curl from a pod: the status code and the body. */
function curl(pod: string, url: string, ...args: string[]): { code: number; body: string } {
  const out = podExec(lab, pod, ['curl', '-s', '-m', '10', '-w', '\n@@%{http_code}', ...args, url]);
  const at = out.lastIndexOf('\n@@');
  return { code: Number(out.slice(at + 3)), body: out.slice(0, at) };
}
const code = (pod: string, url: string, ...args: string[]) => curl(pod, url, ...args).code;

const tmp = mkdtempSync('/var/tmp/weft-e2e-sec-');
chmodSync(tmp, 0o755);
const jwksFile = join(tmp, 'jwks.json');
const spansFile = join(tmp, 'spans.b64');

/** A CA and a certificate for the JWKS pod's service name, made with openssl. */
function jwksCertificates(): void {
  const ssl = (...args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: tmp, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  };
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=lab-jwks-ca');
  ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'jwks.key', '-out', 'jwks.csr', '-subj', '/CN=jwks.bank.svc.cluster.local');
  writeFileSync(join(tmp, 'san.ext'), 'subjectAltName=DNS:jwks.bank.svc.cluster.local\n');
  ssl('x509', '-req', '-in', 'jwks.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'jwks.pem', '-days', '2', '-extfile', 'san.ext');
  for (const f of ['jwks.key', 'jwks.pem', 'ca.pem']) chmodSync(join(tmp, f), 0o644);
}

interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}
async function signingKey(kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' } };
}
const publish = (...keys: SigningKey[]) => writeFileSync(jwksFile, JSON.stringify({ keys: keys.map((k) => k.jwk) }));
const token = (k: SigningKey, o: { sub?: string; exp?: string | number; aud?: string } = {}) =>
  new SignJWT({ group: 'tellers' })
    .setProtectedHeader({ alg: 'ES256', kid: k.kid })
    .setIssuer(ISSUER)
    .setSubject(o.sub ?? 'alice')
    .setAudience(o.aud ?? 'bank')
    .setIssuedAt(typeof o.exp === 'number' ? o.exp - 60 : undefined)
    .setExpirationTime(o.exp ?? '1h')
    .sign(k.privateKey);

const pod = (ns: string, name: string, node: string, labels: string, container: string) =>
  `apiVersion: v1\nkind: Pod\nmetadata: {name: ${name}, namespace: ${ns}, labels: {${labels}}}\nspec:\n  nodeName: ${node}\n  containers:\n${container}`;
const nodeContainer = (name: string, port: number, args: string[]) =>
  `  - name: ${name}\n    image: weft/sleep\n    command: ${JSON.stringify(['node', join(FIXTURES, `${name}.mjs`), ...args])}\n    workingDir: ${JSON.stringify(REPO)}\n    ports: [{name: p, containerPort: ${port}}]\n    readinessProbe: {tcpSocket: {port: ${port}}, periodSeconds: 1}\n`;
const service = (ns: string, name: string, selector: string, port: number, target: number, portName = 'http') =>
  `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n  selector: {${selector}}\n  ports: [{name: ${portName}, port: ${port}, targetPort: ${target}}]\n`;
const targetService = (name: string) => `targetRefs: [{kind: Service, group: "", name: ${name}}]`;

function manifest(): string {
  const echo = (name: string) => pod('bank', name, 'node-1', 'app: echo', `  - {name: echo, image: weft/echo, ports: [{name: http, containerPort: 8080}], readinessProbe: {tcpSocket: {port: http}, periodSeconds: 1}}\n`);
  return [
    // Clients in two namespaces; the services and their waypoint in bank.
    'apiVersion: v1\nkind: Namespace\nmetadata: {name: bank, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}\n',
    'apiVersion: v1\nkind: Namespace\nmetadata: {name: retail, labels: {istio.io/dataplane-mode: ambient}}\n',
    'apiVersion: v1\nkind: Namespace\nmetadata: {name: other, labels: {istio.io/dataplane-mode: ambient}}\n',
    // The waypoint trusts the JWKS server's CA: its Deployment gets JWKS_CA_CERTS through the
    // Gateway's parametersRef, as an operator would customize it on Kubernetes.
    'apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: waypoint, namespace: bank}\nspec:\n  gatewayClassName: istio-waypoint\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n  infrastructure: {parametersRef: {group: "", kind: ConfigMap, name: waypoint-params}}\n',
    `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: waypoint-params, namespace: bank}\ndata:\n  deployment: |\n    spec:\n      template:\n        spec:\n          containers:\n          - name: istio-proxy\n            env: [{name: JWKS_CA_CERTS, value: ${JSON.stringify(join(tmp, 'ca.pem'))}}]\n`,
    echo('echo'),
    pod('retail', 'shopper', 'node-0', 'app: shopper', '  - {name: shell, image: weft/sleep}\n'),
    pod('other', 'stranger', 'node-0', 'app: stranger', '  - {name: shell, image: weft/sleep}\n'),
    // The helpers the waypoint calls: a JWKS endpoint over HTTPS, a gRPC authorizer, an OTLP collector.
    pod('bank', 'jwks', 'node-1', 'app: jwks', nodeContainer('jwks-server', 8443, ['8443', join(tmp, 'jwks.pem'), join(tmp, 'jwks.key'), jwksFile])),
    pod('bank', 'authz', 'node-1', 'app: authz', nodeContainer('ext-authz-server', 9000, ['9000'])),
    pod('bank', 'collector', 'node-0', 'app: collector', nodeContainer('otlp-collector', 4318, ['4318', spansFile])),
    service('bank', 'jwks', 'app: jwks', 443, 8443, 'https'),
    service('bank', 'authz', 'app: authz', 9000, 9000, 'grpc'),
    service('bank', 'collector', 'app: collector', 4318, 4318),
    // One Service per scenario, all backed by the echo pod.
    ...['api', 'secure', 'guarded', 'lenient', 'traced', 'sampled'].map((s) => service('bank', s, 'app: echo', 80, 8080)),
    // Mesh configuration: the external authorizers and the trace collector.
    `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n` +
      '    extensionProviders:\n' +
      '    - {name: lab-authz, envoyExtAuthzGrpc: {service: authz.bank.svc.cluster.local, port: 9000, timeout: 2s}}\n' +
      '    - {name: lab-authz-open, envoyExtAuthzGrpc: {service: authz.bank.svc.cluster.local, port: 9000, timeout: 2s, failOpen: true}}\n' +
      '    - {name: lab-otel, opentelemetry: {service: collector.bank.svc.cluster.local, port: 4318, http: {path: /v1/traces, timeout: 5s}}}\n',
    // GET /api/{*} from namespace retail only.
    `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: api-readers, namespace: bank}\nspec:\n  ${targetService('api')}\n  action: ALLOW\n  rules:\n  - from: [{source: {namespaces: [retail]}}]\n    to: [{operation: {methods: [GET], paths: ["/api/{*}"]}}]\n`,
    // JWT: tokens of the issuer, keys from the JWKS pod; a request principal is required; the subject is forwarded.
    `apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: secure-jwt, namespace: bank}\nspec:\n  ${targetService('secure')}\n  jwtRules:\n  - issuer: ${ISSUER}\n    audiences: [bank]\n    jwksUri: https://jwks.bank.svc.cluster.local/jwks.json\n    outputClaimToHeaders: [{header: x-jwt-sub, claim: sub}]\n`,
    `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: secure-principals, namespace: bank}\nspec:\n  ${targetService('secure')}\n  action: ALLOW\n  rules:\n  - from: [{source: {requestPrincipals: ["*"]}}]\n`,
    // CUSTOM: the lab authorizer decides every request to guarded (closed) and lenient (failOpen).
    `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: guarded-ext, namespace: bank}\nspec:\n  ${targetService('guarded')}\n  action: CUSTOM\n  provider: {name: lab-authz}\n  rules: [{}]\n`,
    `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: lenient-ext, namespace: bank}\nspec:\n  ${targetService('lenient')}\n  action: CUSTOM\n  provider: {name: lab-authz-open}\n  rules: [{}]\n`,
    // Tracing: every request to traced, 10 % of those to sampled.
    `apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: traced, namespace: bank}\nspec:\n  ${targetService('traced')}\n  tracing: [{providers: [{name: lab-otel}], randomSamplingPercentage: 100}]\n`,
    `apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: sampled, namespace: bank}\nspec:\n  ${targetService('sampled')}\n  tracing: [{providers: [{name: lab-otel}], randomSamplingPercentage: 10}]\n`,
  ].join('---\n');
}

const spans = () => {
  const r = new OtlpReceiver();
  if (existsSync(spansFile)) r.takeLines(readFileSync(spansFile, 'utf8'));
  return r.spans;
};

let key1: SigningKey;

describe('waypoint L7 zero trust and tracing in the lab', () => {
  beforeAll(async () => {
    jwksCertificates();
    key1 = await signingKey('k1');
    publish(key1);
    writeFileSync(spansFile, '');
    chmodSync(spansFile, 0o666);
    const file = join(tmp, 'app.yaml');
    writeFileSync(file, manifest());
    const r = weft(['up', '--name', lab, '--nodes', '2', '-f', file]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // Policies reach the waypoint over xDS after its pod is ready: wait for the api policy's 403.
    await until(() => code('other/stranger', 'http://api.bank/api/x') === 403, 90_000, 'the api policy at the waypoint');
  }, 300_000);
  afterAll(() => {
    weft(['down', '--name', lab]);
    expect(leftovers(lab)).toEqual([]);
    rmSync(tmp, { recursive: true, force: true });
  });

  it("allows GET /api/{*} from namespace retail only: its POST and another namespace's GET are 403, counted and logged with the policy", () => {
    const before = requestsTotal({ destination_service: 'api.bank.svc.cluster.local', response_code: '403', response_flags: 'RBAC' });
    expect(code('retail/shopper', 'http://api.bank/api/accounts')).toBe(200);
    const post = curl('retail/shopper', 'http://api.bank/api/accounts', '-X', 'POST', '-d', 'x');
    expect(post).toEqual({ code: 403, body: 'RBAC: access denied' });
    expect(code('other/stranger', 'http://api.bank/api/accounts')).toBe(403);
    expect(code('retail/shopper', 'http://api.bank/api/a/b')).toBe(403); // {*} is one segment
    expect(code('retail/shopper', 'http://api.bank/admin')).toBe(403);
    expect(requestsTotal({ destination_service: 'api.bank.svc.cluster.local', response_code: '403', response_flags: 'RBAC' }) - before).toBe(4);
    const denied = waypointLog().split('\n').filter((l) => l.includes('api.bank') && l.includes('RBAC'));
    expect(denied.length).toBeGreaterThanOrEqual(4);
    expect(denied.every((l) => l.includes('"policy":"ns[bank]-policy[api-readers]"'))).toBe(true);
  });

  it('verifies JWTs against a JWKS served by a pod over HTTPS, forwards a claim, and picks up a rotated key without a restart', async () => {
    const url = 'http://secure.bank/';
    const bearer = (t: string) => ['-H', `authorization: Bearer ${t}`];
    expect(code('retail/shopper', url)).toBe(403); // no token: unauthenticated, and the policy wants a principal
    const good = curl('retail/shopper', url, ...bearer(await token(key1)));
    expect(good.code).toBe(200);
    expect((JSON.parse(good.body) as { headers: Record<string, string> }).headers['x-jwt-sub']).toBe('alice');
    const forger = await signingKey('k1'); // same kid, another key: a forged signature
    expect(curl('retail/shopper', url, ...bearer(await token(forger)))).toMatchObject({ code: 401, body: 'Jwt verification fails' });
    expect(code('retail/shopper', url, ...bearer(await token(key1, { exp: Math.floor(Date.now() / 1000) - 600 })))).toBe(401); // expired
    // Another audience: Envoy's 403, the token is valid but not for this service.
    expect(curl('retail/shopper', url, ...bearer(await token(key1, { aud: 'elsewhere' })))).toEqual({ code: 403, body: 'Audiences in Jwt are not allowed' });
    // Rotation: the JWKS now holds only a new key; a token it signs is accepted once the waypoint
    // refetches (an unknown kid triggers it), and the old key's tokens are refused.
    const key2 = await signingKey('k2');
    publish(key2);
    const t2 = await token(key2, { sub: 'bob' });
    await until(() => code('retail/shopper', url, ...bearer(t2)) === 200, 90_000, 'the rotated JWKS at the waypoint');
    expect((JSON.parse(curl('retail/shopper', url, ...bearer(t2)).body) as { headers: Record<string, string> }).headers['x-jwt-sub']).toBe('bob');
    const old = await token(key1);
    await until(() => code('retail/shopper', url, ...bearer(old)) === 401, 90_000, 'the old key to be dropped');
  });

  it('asks the gRPC authorizer about every request to a CUSTOM-guarded service; with it down, refuses unless failOpen', async () => {
    const allowed = curl('retail/shopper', 'http://guarded.bank/x', '-H', 'x-ext-authz: allow');
    expect(allowed.code).toBe(200);
    expect((JSON.parse(allowed.body) as { headers: Record<string, string> }).headers['x-ext-authz-check']).toBe('allowed');
    expect(curl('retail/shopper', 'http://guarded.bank/x')).toEqual({ code: 403, body: 'denied by the lab authorizer' });
    expect(code('retail/shopper', 'http://lenient.bank/x', '-H', 'x-ext-authz: allow')).toBe(200);
    expect(code('retail/shopper', 'http://lenient.bank/x')).toBe(403);
    expect(requestsTotal({ destination_service: 'guarded.bank.svc.cluster.local', response_code: '403', response_flags: 'UAEX' })).toBeGreaterThanOrEqual(1);
    // The authorizer goes away: closed by default, open where the provider says failOpen.
    expect(weft(['delete', '--name', lab, 'pod', 'authz', '-n', 'bank']).code).toBe(0);
    await until(() => code('retail/shopper', 'http://guarded.bank/x', '-H', 'x-ext-authz: allow') === 403, 60_000, 'guarded to fail closed');
    expect(code('retail/shopper', 'http://lenient.bank/x')).toBe(200);
  });

  it("exports one span per request over OTLP, parented to the client's context, and samples 10 % where Telemetry says so", async () => {
    const traceId = randomBytes(16).toString('hex');
    const parent = randomBytes(8).toString('hex');
    const r = curl('retail/shopper', 'http://traced.bank/t', '-H', `traceparent: 00-${traceId}-${parent}-01`);
    expect(r.code).toBe(200);
    const upstream = (JSON.parse(r.body) as { headers: Record<string, string> }).headers.traceparent ?? '';
    const [, upTrace, upParent] = upstream.split('-');
    expect(upTrace).toBe(traceId); // the same trace reaches the service...
    expect(upParent).not.toBe(parent); // ...with the waypoint's span as its parent
    await until(() => spans().some((s) => s.traceId === traceId), 30_000, 'the span at the collector');
    const mine = spans().filter((s) => s.traceId === traceId);
    expect(mine).toHaveLength(1);
    expect(mine[0]).toMatchObject({ parentSpanId: parent, spanId: upParent, kind: 2 });
    // 10 % of 1,000 requests with no trace context of their own.
    const before = new Set(spans().map((s) => s.traceId));
    const got = podExec(lab, 'retail/shopper', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}\n', 'http://sampled.bank/s?[1-1000]']).trim().split('\n');
    expect(got.filter((c) => c === '200')).toHaveLength(1000);
    const sampled = () => spans().filter((s) => !before.has(s.traceId) && String(s.attributes['http.url'] ?? '').includes('sampled.bank')).length;
    // The waypoint exports in batches (every few seconds): done when nothing new came for 12 s.
    let last = -1;
    let changed = Date.now();
    await until(() => {
      const n = sampled();
      if (n !== last) [last, changed] = [n, Date.now()];
      return n > 0 && Date.now() - changed > 12_000;
    }, 90_000, 'the sampled spans to arrive');
    expect(sampled()).toBeGreaterThanOrEqual(70);
    expect(sampled()).toBeLessThanOrEqual(130);
  });
});
