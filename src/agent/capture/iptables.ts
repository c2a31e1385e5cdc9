// In-pod iptables REDIRECT capture: what Istio's ambient mode installs inside each pod today, kept
// as the baseline that benchmarks compare eBPF capture against. Rules live only in the pod's
// netns; the original destination comes from conntrack through SO_ORIGINAL_DST.
import type { Socket } from 'node:net';
import { WEFT, originalDstSockopt } from '../../bpf/index.ts';
import { hasCommand, run } from '../../util/exec.ts';
import { PROBE_SNAT_ADDRESS } from './node-probes.ts';
import type { PodInfo } from '../../api/enrollment.ts';
import type { AcceptedConnection, CaptureBackend, Endpoint, PodCaptureHandle } from './backend.ts';

const mark = `0x${WEFT.AGENT_MARK.toString(16)}`;

/**
 * The nat rules of one family (iptables-restore for 4, ip6tables-restore for 6). Both are
 * installed: without the IPv6 half a pod's IPv6 connections would bypass the agent entirely.
 */
export function renderRules(family: 4 | 6 = 4): string {
  return [
    '*nat',
    ':WEFT_OUTPUT - [0:0]',
    ':WEFT_PREROUTING - [0:0]',
    '-A OUTPUT -p tcp -j WEFT_OUTPUT',
    '-A PREROUTING -p tcp -j WEFT_PREROUTING',
    // The agent's own dials carry its mark; loopback traffic stays inside the pod.
    `-A WEFT_OUTPUT -m mark --mark ${mark} -j RETURN`,
    '-A WEFT_OUTPUT -o lo -j RETURN',
    `-A WEFT_OUTPUT -p tcp -j REDIRECT --to-ports ${WEFT.PORT_OUTBOUND}`,
    '-A WEFT_PREROUTING -i lo -j RETURN',
    ...(family === 4 ? [`-A WEFT_PREROUTING -s ${PROBE_SNAT_ADDRESS}/32 -j RETURN`] : []), // the node's probes (capture/node-probes.ts), IPv4 only
    `-A WEFT_PREROUTING -p tcp --dport ${WEFT.PORT_HBONE} -j RETURN`,
    `-A WEFT_PREROUTING -p tcp -j REDIRECT --to-ports ${WEFT.PORT_INBOUND}`,
    'COMMIT',
    '',
  ].join('\n');
}

const REMOVE = ['*nat', '-D OUTPUT -p tcp -j WEFT_OUTPUT', '-D PREROUTING -p tcp -j WEFT_PREROUTING', '-F WEFT_OUTPUT', '-X WEFT_OUTPUT', '-F WEFT_PREROUTING', '-X WEFT_PREROUTING', 'COMMIT', ''].join('\n');

const inPod = (netns: string, argv: string[], input?: string) => run(['nsenter', `--net=${netns}`, ...argv], { input });
const RESTORE = { 4: 'iptables-restore', 6: 'ip6tables-restore' } as const;

function fdOf(sock: AcceptedConnection): number {
  const fd = 'fd' in sock ? sock.fd : (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no file descriptor');
  return fd;
}

class IptablesPod implements PodCaptureHandle {
  private out = 0;
  private in = 0;
  constructor(private readonly netns: string) {}

  setInboundListener(): void {} // REDIRECT finds the listener by port

  outboundOriginalDst(sock: AcceptedConnection): Endpoint | undefined {
    this.out++;
    return originalDstSockopt(fdOf(sock));
  }

  inboundOriginalDst(sock: Socket): Endpoint | undefined {
    this.in++;
    return originalDstSockopt(fdOf(sock));
  }

  /** Every connection the agent accepts here was redirected by the rules: count them as captured. */
  counters() {
    return { outbound: this.out, inbound: this.in };
  }

  async release(): Promise<void> {
    const results = await Promise.allSettled(([4, 6] as const).map((f) => inPod(this.netns, [RESTORE[f], '--noflush'], REMOVE)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  close(): void {}
}

export class IptablesCapture implements CaptureBackend {
  readonly mode = 'iptables' as const;
  readonly inboundBindAddress = { 4: '0.0.0.0', 6: '::' };

  static async open(): Promise<IptablesCapture> {
    for (const t of ['iptables-restore', 'ip6tables-restore', 'nsenter']) if (!hasCommand(t)) throw new Error(`iptables capture needs ${t} (install iptables and util-linux)`);
    return new IptablesCapture();
  }

  async enroll(pod: PodInfo): Promise<PodCaptureHandle> {
    // Idempotent: an earlier agent may have installed the rules already.
    const handle = new IptablesPod(pod.netns);
    try {
      for (const f of [4, 6] as const) {
        await inPod(pod.netns, [RESTORE[f], '--noflush'], REMOVE).catch(() => undefined);
        await inPod(pod.netns, [RESTORE[f], '--noflush'], renderRules(f));
      }
    } catch (e) {
      await handle.release().catch(() => undefined); // no half-captured pod
      throw e;
    }
    return handle;
  }

  async forgetExcept(): Promise<void> {} // rules live in pod namespaces and go with them

  close(): void {}
}
