import { describe, expect, it } from 'vitest';
import { decideEnrollment, shouldEnroll, validatePodInfo, type PodInfo, type PodSandbox } from '../../src/api/enrollment.ts';

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

describe('decideEnrollment: what the CNI plugin and the lab decide for a pod', () => {
  const AMBIENT = { 'istio.io/dataplane-mode': 'ambient' };
  const NONE = { 'istio.io/dataplane-mode': 'none' };
  const AT = { netns: '/var/run/netns/cni-1', cgroup: '/sys/fs/cgroup/kubepods/pod1', ips: ['10.244.1.5', 'fd00:10:244:1::5'] };
  const pod = (o: { labels?: Record<string, string>; annotations?: Record<string, string>; sa?: string; hostNetwork?: boolean } = {}) => ({
    metadata: { uid: 'u-1', name: 'web-1', namespace: 'shop', labels: o.labels, annotations: o.annotations },
    spec: { ...(o.sa !== undefined ? { serviceAccountName: o.sa } : {}), ...(o.hostNetwork !== undefined ? { hostNetwork: o.hostNetwork } : {}) },
  });
  const info = (extra: Partial<PodInfo> = {}): PodInfo => ({ uid: 'u-1', name: 'web-1', namespace: 'shop', serviceAccount: 'default', ...AT, ...extra });
  // [case, pod, namespace labels, where, expected: the PodInfo sent to the agent, or the reason to skip]
  const cases: [string, ReturnType<typeof pod>, Record<string, string> | undefined, PodSandbox, PodInfo | string][] = [
    ['ambient namespace', pod(), AMBIENT, AT, info()],
    ['ambient pod in a plain namespace', pod({ labels: AMBIENT }), {}, AT, info()],
    ['ambient pod, namespace not found', pod({ labels: AMBIENT }), undefined, AT, info()],
    ['opted-out pod in an ambient namespace', pod({ labels: NONE }), AMBIENT, AT, 'not ambient'],
    ['other pod value: the namespace decides', pod({ labels: { 'istio.io/dataplane-mode': 'sidecar' } }), AMBIENT, AT, info()],
    ['plain namespace', pod({ labels: { app: 'web' } }), {}, AT, 'not ambient'],
    ['namespace in another mode', pod(), { 'istio.io/dataplane-mode': 'sidecar' }, AT, 'not ambient'],
    ['namespace label value is case-sensitive', pod(), { 'istio.io/dataplane-mode': 'Ambient' }, AT, 'not ambient'],
    ['host network, ambient namespace', pod({ hostNetwork: true }), AMBIENT, AT, 'host network'],
    ['host network, ambient pod', pod({ labels: AMBIENT, hostNetwork: true }), {}, AT, 'host network'],
    ['hostNetwork: false', pod({ hostNetwork: false }), AMBIENT, AT, info()],
    ['service account', pod({ sa: 'reviews' }), AMBIENT, AT, info({ serviceAccount: 'reviews' })],
    ['empty service account is the default one', pod({ sa: '' }), AMBIENT, AT, info()],
    ['capture annotation iptables', pod({ annotations: { 'weft.dev/capture': 'iptables' } }), AMBIENT, AT, info({ capture: 'iptables' })],
    ['capture annotation ebpf', pod({ annotations: { 'weft.dev/capture': 'ebpf' } }), AMBIENT, AT, info({ capture: 'ebpf' })],
    ['unknown capture value: the agent default', pod({ annotations: { 'weft.dev/capture': 'IPTABLES' } }), AMBIENT, AT, info()],
    ['empty capture value: the agent default', pod({ annotations: { 'weft.dev/capture': '' } }), AMBIENT, AT, info()],
    ['capture annotation on a pod outside the mesh', pod({ annotations: { 'weft.dev/capture': 'iptables' } }), {}, AT, 'not ambient'],
    ['no addresses from the network plugin', pod(), AMBIENT, { ...AT, ips: [] }, info({ ips: [] })],
    ['IPv4 only', pod(), AMBIENT, { ...AT, ips: ['10.244.1.5'] }, info({ ips: ['10.244.1.5'] })],
  ];
  it.each(cases)('%s', (_, p, nsLabels, at, want) => {
    const d = decideEnrollment(p, nsLabels);
    if (typeof want === 'string') {
      expect(d).toEqual({ enroll: false, why: want });
      return;
    }
    expect(d.enroll).toBe(true);
    if (!d.enroll) return;
    expect(d.why).toBe('ambient');
    const got = d.podInfo(at);
    expect(got).toEqual(want);
    expect(validatePodInfo(got)).toEqual(got); // and the agent takes it
  });
});
