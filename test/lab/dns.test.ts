import { describe, expect, it } from 'vitest';
import { renderHosts, renderResolvConf } from '../../src/lab/dns.ts';

describe('pod name resolution', () => {
  const services = [
    { name: 'web', namespace: 'shop', clusterIP: '10.96.0.10' },
    { name: 'db', namespace: 'data', clusterIP: '10.96.0.11' },
  ];
  it('lists short names only for the pod namespace and qualified names for all', () => {
    const hosts = renderHosts({ name: 'p', ip: '10.244.0.2', namespace: 'shop' }, services);
    expect(hosts).toContain('10.96.0.10\tweb.shop.svc.cluster.local web.shop.svc web.shop web\n');
    expect(hosts).toContain('10.96.0.11\tdb.data.svc.cluster.local db.data.svc db.data\n');
    expect(hosts).toContain('10.244.0.2\tp\n');
  });
  it('searches the pod namespace first', () => {
    expect(renderResolvConf('shop')).toMatch(/^search shop\.svc\.cluster\.local svc\.cluster\.local cluster\.local$/m);
  });
});
