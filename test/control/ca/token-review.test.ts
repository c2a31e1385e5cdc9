// Node authentication on Kubernetes through TokenReview, against an API-server double (the one
// part weft may fake: no cluster runs here).
import { createServer, type Server } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NODE_NAME_EXTRA, TokenReviewAuthenticator, type TokenReviewOptions } from '../../../src/control/ca/token-review.ts';
import { sleep } from '../../../src/util/sleep.ts';
import { loadKubeConfig } from '../../../src/control/config/kube-api.ts';

const users: Record<string, { username: string; node?: string; audiences?: string[] }> = {
  'agent-node-a': { username: 'system:serviceaccount:istio-system:weft-agent', node: 'node-a' },
  'agent-unbound': { username: 'system:serviceaccount:istio-system:weft-agent' },
  'other-sa': { username: 'system:serviceaccount:default:app', node: 'node-a' },
  'wrong-audience': { username: 'system:serviceaccount:istio-system:weft-agent', node: 'node-a', audiences: ['something-else'] },
};

/** A token of the shape the server accepts for any node: `agent-<node>`, or a JWT-like `h.<payload>.sig-<node>`. */
const jwt = (node: string, expS: number) => `h.${Buffer.from(JSON.stringify({ exp: expS })).toString('base64url')}.sig-${node}`;
const userOf = (token: string): (typeof users)[string] | undefined => users[token] ?? (/^agent-(n\d+)$/.exec(token) ?? /^h\.[^.]+\.sig-(.+)$/.exec(token))?.slice(1).map((node) => ({ username: 'system:serviceaccount:istio-system:weft-agent', node }))[0];

describe('TokenReview node authentication', () => {
  let server: Server;
  const requests: { auth?: string; body: { spec: { token: string; audiences: string[] } } }[] = [];
  let auth: TokenReviewAuthenticator;
  let kubeconfigText = '';
  /** Test controls: answer 500 this many times; hold answers until released; reviews being answered. */
  const ctl = { fail: 0, hold: undefined as Promise<void> | undefined, inFlight: 0, maxInFlight: 0 };

  beforeAll(async () => {
    server = createServer((req, res) => {
      let s = '';
      req.on('data', (d: Buffer) => (s += d.toString()));
      req.on('end', () => {
        if (req.method !== 'POST' || req.url !== '/apis/authentication.k8s.io/v1/tokenreviews') return res.writeHead(404).end('{}');
        const body = JSON.parse(s) as { spec: { token: string; audiences: string[] } };
        requests.push({ auth: req.headers.authorization, body });
        if (ctl.fail > 0) {
          ctl.fail--;
          return res.writeHead(500, { 'content-type': 'application/json' }).end('{"kind":"Status","message":"etcd is down"}');
        }
        const u = userOf(body.spec.token);
        const status = u
          ? { authenticated: true, audiences: u.audiences ?? body.spec.audiences, user: { username: u.username, extra: u.node ? { [NODE_NAME_EXTRA]: [u.node] } : {} } }
          : { authenticated: false, error: 'invalid bearer token' };
        ctl.maxInFlight = Math.max(ctl.maxInFlight, ++ctl.inFlight);
        void (ctl.hold ?? Promise.resolve()).then(() => {
          ctl.inFlight--;
          res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', status }));
        });
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    const dir = mkdtempSync(join(tmpdir(), 'weft-tokenreview-'));
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'c', cluster: { server: `http://127.0.0.1:${port}`, 'insecure-skip-tls-verify': true } }],
        users: [{ name: 'u', user: { token: 'control-plane-token' } }],
        contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
        'current-context': 'x',
      }),
    );
    auth = new TokenReviewAuthenticator(loadKubeConfig({ kubeconfig }), { agentServiceAccounts: ['istio-system/weft-agent'], audiences: ['istio-ca'] });
    kubeconfigText = readFileSync(kubeconfig, 'utf8');
    rmSync(dir, { recursive: true, force: true }); // the kubeconfig is read by now
  });
  afterAll(() => server.close());

  it("names the node an agent's bound token belongs to, and asks with the control plane's own credential", async () => {
    expect(await auth.authenticate('agent-node-a')).toBe('node-a');
    expect(requests.at(-1)).toMatchObject({ auth: 'Bearer control-plane-token', body: { spec: { token: 'agent-node-a', audiences: ['istio-ca'] } } });
    const n = requests.length;
    expect(await auth.authenticate('agent-node-a')).toBe('node-a'); // cached
    expect(requests.length).toBe(n);
  });

  it('refuses unknown tokens, other service accounts, tokens bound to no node and other audiences', async () => {
    expect(await auth.authenticate('forged')).toBeUndefined();
    expect(await auth.authenticate('other-sa')).toBeUndefined();
    expect(await auth.authenticate('agent-unbound')).toBeUndefined();
    expect(await auth.authenticate('wrong-audience')).toBeUndefined();
    expect(await auth.authenticate('')).toBeUndefined();
  });

  /** An authenticator of its own (own caches) with these options. */
  const make = (o: Partial<TokenReviewOptions> = {}) => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-tokenreview-'));
    writeFileSync(join(dir, 'kubeconfig'), kubeconfigText);
    const kc = loadKubeConfig({ kubeconfig: join(dir, 'kubeconfig') });
    rmSync(dir, { recursive: true, force: true });
    return new TokenReviewAuthenticator(kc, { agentServiceAccounts: ['istio-system/weft-agent'], audiences: ['istio-ca'], ...o });
  };
  const reviewsOf = (token: string) => requests.filter((r) => r.body.spec.token === token).length;

  it('a refused token is reviewed once per negativeCacheMs, however often and however concurrently it comes', async () => {
    const a = make({ negativeCacheMs: 300 });
    const results = await Promise.all(Array.from({ length: 200 }, () => a.authenticate('flood-token')));
    expect(results.every((r) => r === undefined)).toBe(true);
    for (let i = 0; i < 200; i++) expect(await a.authenticate('flood-token')).toBeUndefined();
    expect(reviewsOf('flood-token')).toBe(1);
    // Refusals for other reasons are cached too: another ServiceAccount's valid token.
    for (let i = 0; i < 20; i++) expect(await a.authenticate('other-sa')).toBeUndefined();
    expect(a.reviews).toBe(2);
    await sleep(350);
    expect(await a.authenticate('flood-token')).toBeUndefined();
    expect(reviewsOf('flood-token')).toBe(2); // briefly: a token that became valid is not refused for long
  });

  it('bounds both caches; a flood of bad tokens cannot push out good ones', async () => {
    const a = make({ maxEntries: 50 });
    for (let i = 0; i < 5; i++) expect(await a.authenticate(`agent-n${i}`)).toBe(`n${i}`);
    for (let i = 0; i < 1000; i++) expect(await a.authenticate(`bad-${i}`)).toBeUndefined();
    expect(a.cached).toEqual({ positive: 5, negative: 50 });
    const before = a.reviews;
    for (let i = 0; i < 5; i++) expect(await a.authenticate(`agent-n${i}`)).toBe(`n${i}`);
    expect(a.reviews).toBe(before); // still cached
    // Positives are bounded too: the oldest go first.
    for (let i = 5; i < 80; i++) await a.authenticate(`agent-n${i}`);
    expect(a.cached.positive).toBe(50);
    const n = a.reviews;
    expect(await a.authenticate('agent-n79')).toBe('n79');
    expect(a.reviews).toBe(n);
    expect(await a.authenticate('agent-n0')).toBe('n0');
    expect(a.reviews).toBe(n + 1);
  });

  it('prunes expired answers, and never trusts a cached answer past cacheMs or the token\'s own expiry', async () => {
    const a = make({ cacheMs: 200, negativeCacheMs: 200, maxEntries: 1000 });
    for (let i = 0; i < 20; i++) await a.authenticate(`agent-n${200 + i}`);
    for (let i = 0; i < 20; i++) await a.authenticate(`gone-${i}`);
    expect(a.cached).toEqual({ positive: 20, negative: 20 });
    await sleep(250);
    await a.authenticate('agent-n100'); // any new answer sweeps the expired ones out
    await a.authenticate('gone-100');
    expect(a.cached).toEqual({ positive: 1, negative: 1 });
    expect(await a.authenticate('agent-n200')).toBe('n200');
    expect(reviewsOf('agent-n200')).toBe(2);

    // A token expiring in 1 s is reviewed again after that, though cacheMs is a minute.
    const long = make({ cacheMs: 60_000 });
    const token = jwt('n-exp', Math.floor(Date.now() / 1000) + 1);
    expect(await long.authenticate(token)).toBe('n-exp');
    expect(await long.authenticate(token)).toBe('n-exp');
    expect(reviewsOf(token)).toBe(1);
    await sleep(2100);
    expect(await long.authenticate(token)).toBe('n-exp'); // this server still says yes; a real one would not
    expect(reviewsOf(token)).toBe(2);
    // An expired token is never cached as valid.
    const expired = jwt('n-old', Math.floor(Date.now() / 1000) - 10);
    await long.authenticate(expired);
    await long.authenticate(expired);
    expect(reviewsOf(expired)).toBe(2);
  });

  it('does not cache API failures, and caps the reviews in flight', async () => {
    const a = make({ maxInFlight: 4 });
    ctl.fail = 1;
    await expect(a.authenticate('agent-n500')).rejects.toThrow(/500/);
    expect(await a.authenticate('agent-n500')).toBe('n500');

    let release!: () => void;
    ctl.hold = new Promise<void>((r) => (release = r));
    ctl.maxInFlight = 0;
    const many = Array.from({ length: 40 }, (_, i) => a.authenticate(`slow-${i}`).then((v) => ({ v }), (e: Error) => ({ e: e.message })));
    await sleep(200);
    release();
    ctl.hold = undefined;
    const out = await Promise.all(many);
    expect(ctl.maxInFlight).toBeLessThanOrEqual(4);
    expect(out.filter((o) => 'e' in o).length).toBe(36);
    expect(out.find((o) => 'e' in o)).toEqual({ e: expect.stringMatching(/too many in flight/) });
    expect(await a.authenticate('agent-n501')).toBe('n501'); // capacity is back
  });
});
