// `weft analyze` reports exactly the problems the running control plane logs for the same
// configuration, and everything valid still reaches the model.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePorts } from '../util/ports.ts';

const BIN = new URL('../../bin/weft.js', import.meta.url).pathname;
const DIR = new URL('./fixtures/bad-config', import.meta.url).pathname;

describe('weft analyze', () => {
  it('prints every problem with file, object and field, and exits 1', () => {
    const r = spawnSync(process.execPath, [BIN, 'analyze', DIR], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toContain(`${DIR}/mixed.yaml: Service shop/web: spec.ports[0].port: must be an integer port 1-65535, got 70000`);
    expect(lines.some((l) => l.startsWith(`${DIR}/mixed.yaml: AuthorizationPolicy shop/p: spec.bogus:`))).toBe(true);
    expect(lines.some((l) => l.startsWith(`${DIR}/mixed.yaml: VirtualService shop/vs: spec.http[0].route[0].weight:`))).toBe(true);
    expect(lines.some((l) => /broken\.yaml:\d+: document 2: invalid YAML/.test(l))).toBe(true);
  });

  it('matches what the control plane logs for the same directory', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'weft-analyze-'));
    writeFileSync(join(tmp, 'tokens.json'), '{}');
    // Ports the kernel hands out as free (a random pick inside the ephemeral range could collide).
    const [plain, tls, metrics] = await freePorts(3);
    const cp = spawn(process.execPath, [BIN, 'control', '--config-dir', DIR, '--node-tokens', join(tmp, 'tokens.json'), '--plain-address', `127.0.0.1:${plain}`, '--tls-address', `127.0.0.1:${tls}`, '--metrics-address', `127.0.0.1:${metrics}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    cp.stdout.on('data', (d: Buffer) => (out += d.toString()));
    cp.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      const end = Date.now() + 30_000;
      while (!out.includes('control plane ready') && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
      expect(out).toContain('control plane ready');
    } finally {
      cp.kill('SIGTERM');
      rmSync(tmp, { recursive: true, force: true });
    }
    const logged = out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg: string; problem?: string })
      .filter((l) => l.msg === 'invalid configuration skipped')
      .map((l) => l.problem!)
      .sort();
    const analyzed = spawnSync(process.execPath, [BIN, 'analyze', DIR], { encoding: 'utf8' }).stdout.trim().split('\n').sort();
    expect(logged.length).toBeGreaterThan(3);
    expect(logged).toEqual(analyzed);
  });
});

