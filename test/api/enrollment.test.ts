import { describe, expect, it } from 'vitest';
import { shouldEnroll, validatePodInfo } from '../../src/api/enrollment.ts';

describe('enrollment policy', () => {
  const ambient = { 'istio.io/dataplane-mode': 'ambient' };
  it('follows Istio ambient labels', () => {
    expect(shouldEnroll(ambient, {})).toBe(true);
    expect(shouldEnroll(ambient, { 'istio.io/dataplane-mode': 'none' })).toBe(false);
    expect(shouldEnroll({}, {})).toBe(false);
    expect(shouldEnroll(undefined, { 'istio.io/dataplane-mode': 'ambient' })).toBe(true);
    expect(shouldEnroll({ 'istio.io/dataplane-mode': 'sidecar' }, {})).toBe(false);
  });
  it('names the missing field of a bad enrollment request', () => {
    const good = { uid: 'u1', name: 'p', namespace: 'n', serviceAccount: 'sa', ips: ['10.0.0.1'], netns: '/run/netns/x', cgroup: '/sys/fs/cgroup/x' };
    expect(validatePodInfo(good)).toEqual(good);
    expect(() => validatePodInfo({ ...good, netns: undefined })).toThrow('field "netns" is required');
    expect(() => validatePodInfo({ ...good, ips: 'x' })).toThrow('field "ips"');
    expect(() => validatePodInfo({ ...good, uid: '../etc' })).toThrow('field "uid" has invalid characters');
  });
});

describe('enrollment request addresses', () => {
  const good = { uid: 'u1', name: 'p', namespace: 'n', serviceAccount: 'sa', ips: ['10.0.0.1', 'fd00::5'], netns: '/run/netns/x', cgroup: '/sys/fs/cgroup/x' };
  it('takes IPv4 and IPv6 addresses only, each once', () => {
    expect(validatePodInfo(good).ips).toEqual(['10.0.0.1', 'fd00::5']);
    for (const bad of ['not-an-ip', '10.0.0.1/32', '10.0.0.256', '', ' 10.0.0.1', 'fe80::1%eth0', '10.0.0.1:80', 'localhost'])
      expect(() => validatePodInfo({ ...good, ips: [bad] }), bad).toThrow(/field "ips": .* is not an IPv4 or IPv6 address/);
    expect(() => validatePodInfo({ ...good, ips: ['10.0.0.1', '10.0.0.1'] })).toThrow(/twice/);
  });
  it('never takes the process start time from the request (the agent reads it itself)', () => {
    expect(validatePodInfo({ ...good, pidStartTime: '1' })).not.toHaveProperty('pidStartTime');
  });
});
