// In-pod capture end to end, for both capture modes: enrolled pods' outbound and inbound TCP goes
// through their node's agent with the original destination; plain pods are untouched; labels
// take effect live; a dead agent means refused connections, never a bypass.
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, statSync, writeFileSync, mkdtempSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curlFrom, getJson, labName, leftovers, podExec, weft } from './helpers.ts';

const FIXTURE = new URL('./fixtures/capture-app.yaml', import.meta.url).pathname;

type PodJ = {
  metadata: { name: string; namespace: string; uid: string; annotations: Record<string, string> };
  spec: { nodeName: string };
  status: { podIP: string; containerStatuses: { restartCount: number; state: { running?: { startedAt: string } } }[] };
};

interface LogLine {
  msg: string;
  direction?: string;
  pod?: string;
  'src.addr'?: string;
  'dst.addr'?: string;
  error?: string;
}

for (const mode of ['ebpf', 'iptables'] as const) {
  describe(`capture (${mode})`, () => {
    const lab = labName(`cap-${mode.slice(0, 4)}`);
    const tmp = mkdtempSync(join(tmpdir(), 'weft-cap-'));
    const pods = () => getJson<PodJ>(lab, 'pods');
    const pod = (ns: string, name: string) => pods().find((p) => p.metadata.namespace === ns && p.metadata.name === name)!;
    const agentLog = (node: string): LogLine[] =>
      readFileSync(`/run/weft/${lab}/logs/agent_${node}.log`, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as LogLine);
    const conns = (node: string, direction: string, dst: string) => agentLog(node).filter((l) => l.msg === 'connection complete' && l.direction === direction && l['dst.addr'] === dst);
    /** The access log line comes when the agent has seen both sides close, just after curl returns. */
    const connsAtLeast = (node: string, direction: string, dst: string, n: number) => {
      const end = Date.now() + 5000;
      let lines = conns(node, direction, dst);
      while (lines.length < n && Date.now() < end) {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
        lines = conns(node, direction, dst);
      }
      return lines;
    };
    const metrics = (node: string) => spawnSync('nsenter', [`--net=/run/netns/${lab}.${node}`, 'curl', '-s', '-m', '5', 'http://127.0.0.1:15020/metrics'], { encoding: 'utf8' }).stdout;
    const captured = (node: string, ns: string, name: string, dir: string) => {
      const m = new RegExp(`^weft_pod_captured_connections_total\\{namespace="${ns}",pod="${name}",direction="${dir}"\\} (\\d+)$`, 'm').exec(metrics(node));
      return m ? Number(m[1]) : undefined;
    };
    /** BPF links that point at a pod's cgroup or network namespace. */
    const linksFor = (p: PodJ) => {
      const cg = p.metadata.annotations['weft.dev/cgroup'];
      const cgid = cg && existsSync(cg) ? statSync(cg).ino : -1;
      const nsIno = existsSync(`/run/netns/${p.metadata.annotations['weft.dev/netns']}`) ? statSync(`/run/netns/${p.metadata.annotations['weft.dev/netns']}`).ino : -1;
      const links = JSON.parse(spawnSync('bpftool', ['link', 'show', '-j'], { encoding: 'utf8' }).stdout.trim() || '[]') as { cgroup_id?: number; netns_ino?: number }[];
      const onCg = JSON.parse(cg && existsSync(cg) ? spawnSync('bpftool', ['cgroup', 'show', cg, '-j'], { encoding: 'utf8' }).stdout.trim() || '[]' : '[]') as unknown[];
      return links.filter((l) => l.cgroup_id === cgid || l.netns_ino === nsIno).length + onCg.length;
    };
    const iptablesRules = (p: PodJ) => spawnSync('nsenter', [`--net=/run/netns/${p.metadata.annotations['weft.dev/netns']}`, 'iptables-save', '-t', 'nat'], { encoding: 'utf8' }).stdout;
    const capturedSomehow = (p: PodJ) => (mode === 'ebpf' ? linksFor(p) > 0 : iptablesRules(p).includes('WEFT_OUTPUT'));

    beforeAll(() => {
      const r = weft(['up', '--name', lab, '--nodes', '2', '--capture', mode, '-f', FIXTURE]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    });
    afterAll(() => {
      weft(['down', '--name', lab]);
      rmSync(tmp, { recursive: true, force: true });
    });

    it('enrolls pods of ambient namespaces only, honouring the opt-out label', () => {
      const annotated = (ns: string, n: string) => pod(ns, n).metadata.annotations['ambient.istio.io/redirection'];
      expect(annotated('mesh', 'client')).toBe('enabled');
      expect(annotated('mesh', 'echo-a')).toBe('enabled');
      expect(annotated('mesh', 'optout')).toBeUndefined();
      expect(annotated('plain', 'outsider')).toBeUndefined();
      expect(capturedSomehow(pod('mesh', 'client'))).toBe(true);
      for (const [ns, n] of [['mesh', 'optout'], ['plain', 'outsider'], ['plain', 'plain-echo']]) expect(capturedSomehow(pod(ns!, n!))).toBe(false);
    });

    it('captures outbound connections to a pod IP and to a ClusterIP, keeping the original destination', () => {
      const echoB = pod('mesh', 'echo-b');
      const dst = `${echoB.status.podIP}:8080`;
      const before = conns('node-0', 'outbound', dst).length;
      expect(curlFrom(lab, 'mesh/client', `http://${dst}/`).pod).toBe('echo-b');
      const after = connsAtLeast('node-0', 'outbound', dst, before + 1);
      expect(after.length).toBe(before + 1);
      expect(after.at(-1)!.pod).toBe('mesh/client');
      const svcIP = getJson<{ spec: { clusterIP: string } }>(lab, 'services', 'mesh')[0]!.spec.clusterIP;
      expect(['echo-a', 'echo-b']).toContain(curlFrom(lab, 'mesh/client', 'http://echo/').pod);
      expect(connsAtLeast('node-0', 'outbound', `${svcIP}:80`, 1).length).toBeGreaterThan(0);
      expect(captured('node-0', 'mesh', 'client', 'outbound')).toBeGreaterThanOrEqual(2);
      // Loopback stays inside the pod.
      expect(podExec(lab, 'mesh/echo-a', ['curl', '-sf', 'http://127.0.0.1:8080/'])).toContain('"client":"127.0.0.1');
    });

    it('captures inbound connections from outside the mesh on the 15006 listener', () => {
      const echoB = pod('mesh', 'echo-b');
      const outsider = pod('plain', 'outsider');
      const dst = `${echoB.status.podIP}:8080`;
      const before = conns('node-1', 'inbound', dst).length;
      expect(curlFrom(lab, 'plain/outsider', `http://${dst}/`).pod).toBe('echo-b');
      const lines = connsAtLeast('node-1', 'inbound', dst, before + 1);
      expect(lines.length).toBe(before + 1);
      expect(lines.at(-1)!['src.addr']!.split(':')[0]).toBe(outsider.status.podIP);
      expect(captured('node-1', 'mesh', 'echo-b', 'inbound')).toBeGreaterThanOrEqual(1);
      // A plain pod's traffic is not captured at all.
      const plain = pod('plain', 'plain-echo');
      expect(curlFrom(lab, 'plain/outsider', `http://${plain.status.podIP}:8080/`).client.split(':')[0]).toBe(outsider.status.podIP);
      expect(agentLog('node-1').some((l) => l['dst.addr'] === `${plain.status.podIP}:8080`)).toBe(false);
    });

    it('applies label changes live and removes everything on release and deletion', () => {
      const ns = readFileSync(FIXTURE, 'utf8');
      const clientBefore = pod('mesh', 'client');
      // Opt the client out: released, traffic flows directly.
      writeFileSync(join(tmp, 'optout.yaml'), ns.replace('metadata: {name: client, namespace: mesh, labels: {app: client}}', 'metadata: {name: client, namespace: mesh, labels: {app: client, istio.io/dataplane-mode: none}}'));
      expect(weft(['apply', '--name', lab, '-f', join(tmp, 'optout.yaml')]).code).toBe(0);
      const released = pod('mesh', 'client');
      expect(released.metadata.annotations['ambient.istio.io/redirection']).toBeUndefined();
      expect(capturedSomehow(released)).toBe(false);
      if (mode === 'ebpf') expect(existsSync(`/sys/fs/bpf/weft/${lab}/node-0/pods/${released.metadata.uid}`)).toBe(false);
      const echoA = pod('mesh', 'echo-a').status.podIP;
      const n = agentLog('node-0').filter((l) => l.direction === 'outbound').length;
      curlFrom(lab, 'mesh/client', `http://${pod('plain', 'plain-echo').status.podIP}:8080/`);
      expect(agentLog('node-0').filter((l) => l.direction === 'outbound').length).toBe(n);
      // Same pod, not restarted, enrolled again when the label goes.
      expect(weft(['apply', '--name', lab, '-f', FIXTURE]).code).toBe(0);
      const again = pod('mesh', 'client');
      expect(again.metadata.annotations['ambient.istio.io/redirection']).toBe('enabled');
      expect(again.status.containerStatuses[0]!.state.running!.startedAt).toBe(clientBefore.status.containerStatuses[0]!.state.running!.startedAt);
      expect(curlFrom(lab, 'mesh/client', `http://${echoA}:8080/`).pod).toBe('echo-a');
      // Removing the namespace label releases every pod in it.
      writeFileSync(join(tmp, 'plain-ns.yaml'), ns.replace('  labels: {istio.io/dataplane-mode: ambient}\n', ''));
      expect(weft(['apply', '--name', lab, '-f', join(tmp, 'plain-ns.yaml')]).code).toBe(0);
      for (const p of pods().filter((x) => x.metadata.namespace === 'mesh')) expect(capturedSomehow(p)).toBe(false);
      expect(weft(['apply', '--name', lab, '-f', FIXTURE]).code).toBe(0);
      // Deleting an enrolled pod leaves no link, pin or rule behind.
      const gone = pod('mesh', 'echo-a');
      expect(capturedSomehow(gone)).toBe(true);
      expect(weft(['delete', '--name', lab, 'pod', 'echo-a', '-n', 'mesh']).code).toBe(0);
      if (mode === 'ebpf') {
        expect(linksFor(gone)).toBe(0);
        expect(existsSync(`/sys/fs/bpf/weft/${lab}/node-0/pods/${gone.metadata.uid}`)).toBe(false);
      }
      expect(weft(['apply', '--name', lab, '-f', FIXTURE]).code).toBe(0);
    });

    it('refuses new connections while the agent is dead and recovers without restarting pods', () => {
      const echoA = pod('mesh', 'echo-a');
      const clientBefore = pod('mesh', 'client');
      expect(curlFrom(lab, 'mesh/client', `http://${echoA.status.podIP}:8080/`).pod).toBe('echo-a');
      expect(weft(['node-agent', '--name', lab, 'kill', 'node-0']).code).toBe(0);
      // Outbound from an enrolled pod: refused, not sent around the mesh.
      const out = spawnSync(process.execPath, [new URL('../../bin/weft.js', import.meta.url).pathname, 'exec', '--name', lab, 'mesh/client', '--', 'curl', '-s', '-m', '3', `http://${pod('mesh', 'echo-b').status.podIP}:8080/`], { encoding: 'utf8' });
      expect(out.status).not.toBe(0);
      expect(out.stdout).toBe('');
      // Inbound to an enrolled pod on that node: refused too.
      expect(() => podExec(lab, 'plain/outsider', ['curl', '-sf', '-m', '3', `http://${echoA.status.podIP}:8080/`])).toThrow();
      expect(weft(['node-agent', '--name', lab, 'start', 'node-0']).code).toBe(0);
      expect(curlFrom(lab, 'mesh/client', `http://${echoA.status.podIP}:8080/`).pod).toBe('echo-a');
      expect(curlFrom(lab, 'plain/outsider', `http://${echoA.status.podIP}:8080/`).pod).toBe('echo-a');
      const clientAfter = pod('mesh', 'client');
      expect(clientAfter.status.containerStatuses[0]!.restartCount).toBe(0);
      expect(clientAfter.status.containerStatuses[0]!.state.running!.startedAt).toBe(clientBefore.status.containerStatuses[0]!.state.running!.startedAt);
    });

    it('exports per-pod capture counters and enrollment metrics on :15020', () => {
      const text = metrics('node-0');
      expect(text).toMatch(/^weft_agent_enrolled_pods \d+$/m);
      expect(text).toMatch(/^weft_agent_dial_sockets_ready \d+$/m);
      expect(text).toMatch(new RegExp(`^weft_agent_info\\{capture_mode="${mode}"\\} 1$`, 'm'));
      // The agent was restarted above: its pods came back by adoption.
      expect(text).toMatch(/^weft_agent_enrollments_total\{operation="adopt",result="success"\} [1-9]\d*$/m);
    });

    it('leaves nothing behind', () => {
      expect(weft(['down', '--name', lab]).code).toBe(0);
      expect(leftovers(lab)).toEqual([]);
    });
  });
}
