// The node-level connection counter: what an operator reads first must add up to the access log,
// inbound HBONE included (no kernel capture counter sees it).
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { AgentMetrics } from '../../../src/agent/metrics/metrics.ts';
import { IstioTcpMetrics } from '../../../src/telemetry/istio-tcp.ts';
import { Connection } from '../../../src/agent/proxy/connection.ts';
import type { ProxyContext } from '../../../src/agent/proxy/context.ts';

async function connectionCounts(m: AgentMetrics) {
  const metric = (await m.registry.getMetricsAsJSON()).find((x) => x.name === 'weft_agent_connections_total') as { values: { value: number; labels: Record<string, string> }[] };
  return Object.fromEntries(metric.values.map((v) => [`${v.labels.direction} ${v.labels.protocol} ${v.labels.result}`, v.value]));
}

describe('weft_agent_connections_total', () => {
  it('counts ended connections by direction, protocol and result, across scrapes', async () => {
    const m = new AgentMetrics('ebpf');
    m.connectionEnded('inbound', 'hbone', true);
    m.connectionEnded('inbound', 'hbone', true);
    m.connectionEnded('inbound', 'hbone', false);
    m.connectionEnded('outbound', 'node_local', true);
    expect(await connectionCounts(m)).toEqual({ 'inbound hbone success': 2, 'inbound hbone failure': 1, 'outbound node_local success': 1 });
    m.connectionEnded('inbound', 'tcp', true);
    expect(await connectionCounts(m)).toEqual({ 'inbound hbone success': 2, 'inbound hbone failure': 1, 'outbound node_local success': 1, 'inbound tcp success': 1 });
    expect(await m.registry.metrics()).toContain('weft_agent_connections_total{direction="inbound",protocol="hbone",result="success"} 2');
  });

  it('agrees with the access log: one count per line, with the protocol the line names', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({ write: (chunk: Buffer, _e, cb) => (lines.push(JSON.parse(String(chunk)) as Record<string, unknown>), cb()) });
    const metrics = new AgentMetrics('ebpf');
    const ctx = { log: pino(sink), metrics, istio: new IstioTcpMetrics(metrics.registry) } as unknown as ProxyContext;
    const pod = { namespace: 'shop', name: 'echo' };
    const hbone = new Connection(ctx, 'inbound', pod, '10.0.0.9:40000'); // arrived on 15008: never captured
    hbone.decided({ srcPrincipal: 'spiffe://cluster.local/ns/shop/sa/buyer', mtls: true });
    hbone.finish({ sent: 10, received: 20 });
    hbone.finish({ sent: 10, received: 20 }); // a second exit path: still one line, one count
    const denied = new Connection(ctx, 'inbound', pod, '10.0.0.9:40001');
    denied.decided({ mtls: true });
    denied.finish({ sent: 0, received: 0, error: 'denied', flag: 'DENY' });
    const plain = new Connection(ctx, 'inbound', pod, '10.0.0.7:40002');
    plain.finish({ sent: 1, received: 1 });
    const local = new Connection(ctx, 'outbound', pod, '10.0.0.2:40003');
    local.nodeLocal = true;
    local.decided({ mtls: true });
    local.finish({ sent: 1, received: 1 });
    const fromLog: Record<string, number> = {};
    const proto = { HBONE: 'hbone', TCP: 'tcp', 'node-local': 'node_local' } as Record<string, string>;
    for (const l of lines) {
      const key = `${String(l.direction)} ${proto[String(l.protocol)]} ${l.error ? 'failure' : 'success'}`;
      fromLog[key] = (fromLog[key] ?? 0) + 1;
    }
    expect(lines).toHaveLength(4);
    expect(await connectionCounts(metrics)).toEqual(fromLog);
    expect(fromLog).toEqual({ 'inbound hbone success': 1, 'inbound hbone failure': 1, 'inbound tcp success': 1, 'outbound node_local success': 1 });
  });
});
