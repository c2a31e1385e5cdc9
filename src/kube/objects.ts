// The Kubernetes object shapes weft understands (the control plane's model, the lab, the CNI
// plugin and the installer). Kept deliberately close to the API's own
// field names so that `weft get -o json` prints what kubectl users expect.

export interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  uid?: string;
  creationTimestamp?: string;
  ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string }[];
}

export interface KObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  spec?: unknown;
  status?: unknown;
  [k: string]: unknown;
}

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}

export interface Probe {
  tcpSocket?: { port: number | string };
  httpGet?: { port: number | string; path?: string };
  exec?: { command: string[] };
  initialDelaySeconds?: number;
  periodSeconds?: number;
}

export interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  workingDir?: string;
  ports?: { name?: string; containerPort: number; protocol?: string }[];
  readinessProbe?: Probe;
  volumeMounts?: VolumeMount[];
}

export interface VolumeMount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
}

/** The volume sources the lab's kubelet can provide (a subset of Kubernetes'). */
export interface Volume {
  name: string;
  emptyDir?: Record<string, unknown>;
  configMap?: { name: string; items?: { key: string; path: string }[]; optional?: boolean };
  projected?: { sources: ProjectedSource[] };
}

export interface ProjectedSource {
  serviceAccountToken?: { audience?: string; expirationSeconds?: number; path: string };
  configMap?: { name: string; items?: { key: string; path: string }[]; optional?: boolean };
}

export interface PodSpec {
  containers: Container[];
  nodeName?: string;
  serviceAccountName?: string;
  restartPolicy?: 'Always' | 'OnFailure' | 'Never';
  terminationGracePeriodSeconds?: number;
  volumes?: Volume[];
}

export interface Pod extends KObject {
  kind: 'Pod';
  spec: PodSpec;
  status?: PodStatus;
}

export interface PodStatus {
  phase: 'Pending' | 'Running' | 'Succeeded' | 'Failed';
  podIP?: string;
  podIPs?: { ip: string }[];
  hostIP?: string;
  startTime?: string;
  conditions?: { type: string; status: 'True' | 'False' }[];
  containerStatuses?: { name: string; ready: boolean; restartCount: number; started: boolean; state: Record<string, unknown> }[];
}

export interface ServicePort {
  name?: string;
  protocol?: string;
  /** The application protocol (Istio reads it before the port name: http, http2, grpc, tcp...). */
  appProtocol?: string;
  port: number;
  targetPort?: number | string;
}

export interface Service extends KObject {
  kind: 'Service';
  spec: { selector?: Record<string, string>; ports: ServicePort[]; clusterIP?: string; clusterIPs?: string[]; type?: string };
}

export interface Deployment extends KObject {
  kind: 'Deployment';
  spec: {
    replicas?: number;
    selector: { matchLabels?: Record<string, string> };
    template: { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec };
  };
}

export interface Namespace extends KObject {
  kind: 'Namespace';
}

/** `kind/namespace/name`: the identity of an object in the store. */
export function keyOf(o: { kind: string; metadata: { name: string; namespace?: string } }): string {
  return `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}

/** Kinds that live in a namespace; everything else the lab stores is cluster-scoped. */
const CLUSTER_SCOPED = new Set(['Namespace', 'Node', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition', 'GatewayClass']);
export const isNamespaced = (kind: string) => !CLUSTER_SCOPED.has(kind);

export function matchesSelector(labels: Record<string, string> | undefined, selector: Record<string, string> | undefined): boolean {
  if (!selector || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}
