// eBPF capture: cgroup connect hooks steer the pod's outbound TCP to its 15001 listener and an
// sk_lookup program on the pod's netns steers inbound TCP to 15006. Nothing in the node netns.
import { NodeCapture, PodCapture } from '../../bpf/index.ts';
import type { PodInfo } from '../../api/enrollment.ts';
import type { CaptureBackend, Endpoint, PodCaptureHandle } from './backend.ts';

const unmap = (a: string) => (a.startsWith('::ffff:') ? a.slice(7) : a);

class EbpfPod implements PodCaptureHandle {
  constructor(private readonly pod: PodCapture, private readonly node: NodeCapture) {}

  setInboundListener(fd: number, family: 4 | 6): void {
    this.pod.setInboundListener(fd, family);
  }

  outboundOriginalDst(sock: { remoteAddress?: string; remotePort?: number }): Endpoint | undefined {
    if (!sock.remoteAddress || !sock.remotePort) return undefined;
    const o = this.node.originalDst({ netnsCookie: this.pod.netnsCookie, peer: { address: sock.remoteAddress, port: sock.remotePort } });
    return o && { address: unmap(o.address), port: o.port };
  }

  originalDstSource() {
    return { mapFd: this.node.origDstMap.fd, netnsCookie: this.pod.netnsCookie };
  }

  /** sk_lookup keeps the destination: the accepted socket's local address is the original. */
  inboundOriginalDst(sock: { localAddress?: string; localPort?: number }): Endpoint | undefined {
    return sock.localAddress && sock.localPort ? { address: unmap(sock.localAddress), port: sock.localPort } : undefined;
  }

  counters() {
    return { outbound: Number(this.pod.outboundCount()), inbound: Number(this.pod.inboundCount()) };
  }

  async release(): Promise<void> {
    this.pod.release();
  }

  close(): void {
    this.pod.close();
  }
}

export class EbpfCapture implements CaptureBackend {
  readonly mode = 'ebpf' as const;
  readonly inboundBindAddress = { 4: '127.0.0.1', 6: '::1' };
  private constructor(private readonly node: NodeCapture) {}

  static open(pinRoot: string): EbpfCapture {
    return new EbpfCapture(NodeCapture.open({ pinRoot }));
  }

  async enroll(pod: PodInfo): Promise<PodCaptureHandle> {
    return new EbpfPod(this.node.enroll({ id: pod.uid, cgroupPath: pod.cgroup, netns: pod.netns }), this.node);
  }

  async forgetExcept(uids: Set<string>): Promise<void> {
    for (const id of this.node.podIds()) if (!uids.has(id)) this.node.forget(id);
  }

  close(): void {
    this.node.close();
  }
}
