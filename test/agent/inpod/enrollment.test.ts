import { describe, expect, it } from 'vitest';
import { shouldEnroll, validatePodInfo } from '../../../src/agent/inpod/enrollment.ts';

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
