// What the proxy paths share about the pod they serve. Kept apart from the handlers (it lived in
// outbound.ts, which made every other part of the proxy import the outbound path).
import type { PodCaptureHandle } from '../capture/backend.ts';
import type { DialSockets } from './pod-sockets.ts';

/** An enrolled pod, as the proxy paths see it (inpod/pod-manager.ts makes them). */
export interface ProxyPod {
  uid: string;
  namespace: string;
  name: string;
  serviceAccount: string;
  ips: string[];
  netnsFd: number;
  /** Dial sockets made in the pod netns (pod-sockets.ts). */
  sockets: DialSockets;
  capture: PodCaptureHandle;
}
