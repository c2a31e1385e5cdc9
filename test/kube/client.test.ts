import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { inClusterAccess } from '../../src/kube/client.ts';

describe('in-cluster Kubernetes access', () => {
  it("uses the pod's service account and service environment, reading the token on every use", () => {
    const sa = mkdtempSync(join(tmpdir(), 'weft-sa-'));
    try {
      writeFileSync(join(sa, 'ca.crt'), 'CA');
      writeFileSync(join(sa, 'token'), 'tok-1\n');
      const k = inClusterAccess(sa, { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '6443' });
      expect(k).toMatchObject({ server: 'https://[fd00::1]:6443', ca: 'CA', insecure: false });
      expect(k.token()).toBe('tok-1');
      writeFileSync(join(sa, 'token'), 'tok-2');
      expect(k.token()).toBe('tok-2'); // projected tokens rotate on disk
      expect(inClusterAccess(sa, { KUBERNETES_SERVICE_HOST: '10.96.0.1' }).server).toBe('https://10.96.0.1:443');
      expect(() => inClusterAccess(sa, {})).toThrow(/KUBERNETES_SERVICE_HOST/);
      expect(() => inClusterAccess(join(sa, 'missing'), { KUBERNETES_SERVICE_HOST: '10.96.0.1' })).toThrow(/in-cluster Kubernetes access: .*ca\.crt/);
    } finally {
      rmSync(sa, { recursive: true, force: true });
    }
  });
});
