// Node authentication on Kubernetes through TokenReview, against an API-server double (the one
// part weft may fake: no cluster runs here).
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NODE_NAME_EXTRA, TokenReviewAuthenticator } from '../../../src/control/ca/token-review.ts';
import { loadKubeConfig } from '../../../src/control/config/kube-api.ts';

const users: Record<string, { username: string; node?: string; audiences?: string[] }> = {
  'agent-node-a': { username: 'system:serviceaccount:istio-system:weft-agent', node: 'node-a' },
  'agent-unbound': { username: 'system:serviceaccount:istio-system:weft-agent' },
  'other-sa': { username: 'system:serviceaccount:default:app', node: 'node-a' },
  'wrong-audience': { username: 'system:serviceaccount:istio-system:weft-agent', node: 'node-a', audiences: ['something-else'] },
};

describe('TokenReview node authentication', () => {
  let server: Server;
  const requests: { auth?: string; body: { spec: { token: string; audiences: string[] } } }[] = [];
  let auth: TokenReviewAuthenticator;

  beforeAll(async () => {
    server = createServer((req, res) => {
      let s = '';
      req.on('data', (d: Buffer) => (s += d.toString()));
      req.on('end', () => {
        if (req.method !== 'POST' || req.url !== '/apis/authentication.k8s.io/v1/tokenreviews') return res.writeHead(404).end('{}');
        const body = JSON.parse(s) as { spec: { token: string; audiences: string[] } };
        requests.push({ auth: req.headers.authorization, body });
        const u = users[body.spec.token];
        const status = u
          ? { authenticated: true, audiences: u.audiences ?? body.spec.audiences, user: { username: u.username, extra: u.node ? { [NODE_NAME_EXTRA]: [u.node] } : {} } }
          : { authenticated: false, error: 'invalid bearer token' };
        res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', status }));
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
});
