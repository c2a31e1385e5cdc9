// A waypoint Gateway (class istio-waypoint) and what it becomes: the ServiceAccount, Deployment and
// Service that istiod renders for it (names, labels, ports and probes as Istio users see them), and
// the Gateway's status. Pure functions, shared by the control plane's Kubernetes reconciler, the lab
// and `weft waypoint apply`, so all three deploy a waypoint the same way.
import { AGENT_GLIBC_TUNABLES } from '../api/process-env.ts';
import { isDnsLabel, isDnsSubdomain } from './names.ts';
import { applyOverlay, OverlayError, overlayFromConfigMap, overlayResources, type WaypointOverlay } from './waypoint-overlay.ts';

export type { WaypointOverlay } from './waypoint-overlay.ts';

export const WAYPOINT_CLASS = 'istio-waypoint';
export const GATEWAY_API_VERSION = 'gateway.networking.k8s.io/v1';
export const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';
export const GATEWAY_CLASS_LABEL = 'gateway.networking.k8s.io/gateway-class-name';
/** On the Deployment and its pods, as istiod marks what it manages. */
export const MANAGED_LABEL = 'gateway.istio.io/managed';
export const MANAGED_VALUE = 'istio.io-mesh-controller';
export const WAYPOINT_FOR_LABEL = 'istio.io/waypoint-for';
export const USE_WAYPOINT_LABEL = 'istio.io/use-waypoint';
export const USE_WAYPOINT_NAMESPACE_LABEL = 'istio.io/use-waypoint-namespace';
/** The waypoint serves only this service account's workloads (Istio's first ambient releases). */
export const FOR_SERVICE_ACCOUNT_ANNOTATION = 'istio.io/for-service-account';
/** Overrides the service account the waypoint itself runs as (istiod's annotation). */
export const SERVICE_ACCOUNT_ANNOTATION = 'gateway.istio.io/service-account';

export const WAYPOINT_PORTS = Object.freeze({ mesh: 15008, metrics: 15020, status: 15021 });
/** The waypoint process's drain deadline when not told (src/waypoint/main.ts DEFAULT_DRAIN_DEADLINE_S; a test keeps them equal). */
export const WAYPOINT_DRAIN_DEADLINE_S = 30;
/**
 * The pod's grace period: comfortably above the drain deadline, so the kubelet's SIGKILL never
 * cuts a drain that is still within it (the process also needs a moment to close its listeners,
 * flush its log and exit after the deadline).
 */
export const WAYPOINT_TERMINATION_GRACE_S = WAYPOINT_DRAIN_DEADLINE_S + 15;
export const WAYPOINT_FOR = ['service', 'workload', 'all', 'none'] as const;
export type WaypointFor = (typeof WAYPOINT_FOR)[number];

/** Where the waypoint's projected token and the mesh root are mounted (as istiod's template). */
export const WAYPOINT_TOKEN_PATH = '/var/run/secrets/tokens/istio-token';
export const WAYPOINT_ROOT_CERT_PATH = '/var/run/secrets/istio/root-cert.pem';
/** The mesh root's ConfigMap the control plane publishes in every namespace. */
export const ROOT_CERT_CONFIGMAP = 'istio-ca-root-cert';

export interface GatewayListener {
  name?: unknown;
  port?: unknown;
  protocol?: unknown;
  [k: string]: unknown;
}

export interface GatewayObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; uid?: string; generation?: number; labels?: Record<string, string>; annotations?: Record<string, string>; [k: string]: unknown };
  spec?: { gatewayClassName?: unknown; listeners?: unknown; infrastructure?: { labels?: Record<string, string>; annotations?: Record<string, string>; parametersRef?: unknown }; [k: string]: unknown };
  status?: GatewayStatus;
  [k: string]: unknown;
}

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export interface GatewayStatus {
  conditions?: Condition[];
  addresses?: { type: 'IPAddress' | 'Hostname'; value: string }[];
  [k: string]: unknown;
}

/** Who may use a waypoint: its HBONE listener's allowedRoutes.namespaces (Gateway API default: Same). */
export type WaypointFrom = { same: true } | { all: true } | { matchLabels: Record<string, string> };

/** What a valid waypoint Gateway asks for. */
export interface Waypoint {
  name: string;
  namespace: string;
  uid?: string;
  for: WaypointFor;
  /** Serves only this service account (istio.io/for-service-account). */
  forServiceAccount?: string;
  /** The service account the waypoint runs as: the Gateway's name unless gateway.istio.io/service-account. */
  serviceAccount: string;
  /** Namespaces that may use it, from its HBONE listener. */
  from: WaypointFrom;
  infrastructure: { labels: Record<string, string>; annotations: Record<string, string> };
  /**
   * spec.infrastructure.parametersRef as given: checked by waypointParameters, by those who deploy
   * the waypoint, not here: how it is deployed does not change what traffic it takes.
   */
  parametersRef?: unknown;
}

/** Why a Gateway of class istio-waypoint is not accepted: the Gateway API reason and the field. */
export interface WaypointProblem {
  reason: 'ListenersNotValid' | 'InvalidParameters';
  field: string;
  message: string;
}

/** A field of an accepted waypoint that weft does not act on (reported, the waypoint is kept). */
export interface WaypointNote {
  field: string;
  message: string;
}

/** RFC 1035 label: Service names must be one, and the Service is named after the Gateway. */
const DNS1035 = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** The versions of the Gateway API whose Gateways istiod reads. */
const GATEWAY_VERSION = /^gateway\.networking\.k8s\.io\/(v1|v1beta1)$/;

export const isWaypointGateway = (o: { kind?: string; spec?: unknown }): boolean =>
  o.kind === 'Gateway' && (o.spec as { gatewayClassName?: unknown } | undefined)?.gatewayClassName === WAYPOINT_CLASS;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStringMap = (v: unknown): v is Record<string, string> =>
  v === undefined || (isObject(v) && Object.values(v).every((x) => typeof x === 'string'));

/**
 * Checks a Gateway of class istio-waypoint, the one rule for the control plane's reconciler (its
 * status), the mesh model (which traffic uses it) and the CLI. As istiod: the waypoint is its
 * listener on port 15008 with protocol HBONE, whatever its name (istioctl names it mesh); other
 * listeners are allowed and, as weft's waypoint serves only HBONE, noted as ignored. Also: a known
 * waypoint-for, names that can name its Service and ServiceAccount, and the HBONE listener's
 * allowedRoutes.namespaces. The problem names the field.
 */
export function checkWaypoint(gw: GatewayObject): { waypoint: Waypoint; ignored: WaypointNote[] } | { problem: WaypointProblem } {
  const bad = (reason: WaypointProblem['reason'], field: string, message: string) => ({ problem: { reason, field, message } });
  const ignored: WaypointNote[] = [];
  const { name, namespace = 'default', labels = {}, annotations = {} } = gw.metadata ?? {};
  if (typeof gw.apiVersion !== 'string' || !GATEWAY_VERSION.test(gw.apiVersion)) return bad('InvalidParameters', 'apiVersion', `unsupported version ${JSON.stringify(gw.apiVersion)} (gateway.networking.k8s.io/v1 or v1beta1)`);
  if (typeof name !== 'string' || !DNS1035.test(name)) return bad('InvalidParameters', 'metadata.name', `${JSON.stringify(name)} cannot name the waypoint's Service (an RFC 1035 label: lowercase letters, digits, '-', starting with a letter, at most 63)`);
  if (typeof namespace !== 'string' || !isDnsLabel(namespace)) return bad('InvalidParameters', 'metadata.namespace', `${JSON.stringify(namespace)} is not a namespace name`);
  if (!isStringMap(labels) || !isStringMap(annotations)) return bad('InvalidParameters', 'metadata', 'labels and annotations must map strings to strings');
  const listeners = gw.spec?.listeners;
  if (listeners !== undefined && !Array.isArray(listeners)) return bad('ListenersNotValid', 'spec.listeners', 'expected a list');
  let hbone: { l: GatewayListener; at: string } | undefined;
  for (const [i, l] of ((listeners ?? []) as unknown[]).entries()) {
    if (!isObject(l)) return bad('ListenersNotValid', `spec.listeners[${i}]`, 'expected an object');
    if (!hbone && l.port === WAYPOINT_PORTS.mesh && l.protocol === 'HBONE') hbone = { l, at: `spec.listeners[${i}]` };
    else ignored.push({ field: `spec.listeners[${i}]`, message: `weft's waypoint serves only its HBONE listener on ${WAYPOINT_PORTS.mesh}: ignored` });
  }
  if (!hbone) return bad('ListenersNotValid', 'spec.listeners', `a waypoint (class ${WAYPOINT_CLASS}) needs a listener on port ${WAYPOINT_PORTS.mesh} with protocol HBONE (Istio names it mesh)`);
  const from = allowedFrom(hbone.l, hbone.at, ignored);
  if ('problem' in from) return from;
  const forValue = labels[WAYPOINT_FOR_LABEL] ?? 'service';
  if (!(WAYPOINT_FOR as readonly string[]).includes(forValue)) return bad('InvalidParameters', `metadata.labels["${WAYPOINT_FOR_LABEL}"]`, `unknown value ${JSON.stringify(forValue)} (${WAYPOINT_FOR.join(', ')})`);
  const forSa = annotations[FOR_SERVICE_ACCOUNT_ANNOTATION];
  if (forSa !== undefined && !isDnsSubdomain(forSa)) return bad('InvalidParameters', `metadata.annotations["${FOR_SERVICE_ACCOUNT_ANNOTATION}"]`, `${JSON.stringify(forSa)} is not a valid service account name`);
  const sa = annotations[SERVICE_ACCOUNT_ANNOTATION] ?? name;
  if (!isDnsSubdomain(sa)) return bad('InvalidParameters', `metadata.annotations["${SERVICE_ACCOUNT_ANNOTATION}"]`, `${JSON.stringify(sa)} is not a valid service account name`);
  const infra = gw.spec?.infrastructure ?? {};
  if (!isObject(infra) || !isStringMap(infra.labels) || !isStringMap(infra.annotations)) return bad('InvalidParameters', 'spec.infrastructure', 'labels and annotations must map strings to strings');
  return {
    waypoint: {
      name,
      namespace,
      uid: gw.metadata.uid,
      for: forValue as WaypointFor,
      ...(forSa !== undefined && { forServiceAccount: forSa }),
      serviceAccount: sa,
      from: from.from,
      infrastructure: { labels: { ...infra.labels }, annotations: { ...infra.annotations } },
      ...(infra.parametersRef !== undefined && { parametersRef: structuredClone(infra.parametersRef) }),
    },
    ignored,
  };
}

/** The ConfigMap a LocalParametersReference names: as istiod, only a core ConfigMap (group ""). */
function checkParametersRef(ref: unknown): string | undefined | WaypointProblem {
  const field = 'spec.infrastructure.parametersRef';
  const bad = (f: string, message: string): WaypointProblem => ({ reason: 'InvalidParameters', field: f, message });
  if (ref === undefined) return undefined;
  if (!isObject(ref)) return bad(field, 'expected an object (group, kind, name)');
  const extra = Object.keys(ref).filter((k) => !['group', 'kind', 'name'].includes(k));
  if (extra.length > 0) return bad(`${field}.${extra[0]}`, 'unknown field (group, kind, name)');
  if (ref.group !== '' || ref.kind !== 'ConfigMap') return bad(field, `unsupported ${JSON.stringify(ref.group)}/${JSON.stringify(ref.kind)}: a waypoint takes its parameters from a ConfigMap (group "", kind ConfigMap)`);
  if (typeof ref.name !== 'string' || !isDnsSubdomain(ref.name)) return bad(`${field}.name`, `${JSON.stringify(ref.name)} is not a ConfigMap name`);
  return ref.name;
}

/** The ConfigMap to read for waypointParameters: the one a well-formed parametersRef names. */
export function parametersConfigMap(w: Waypoint): string | undefined {
  const name = checkParametersRef(w.parametersRef);
  return typeof name === 'string' ? name : undefined;
}

/**
 * The overlay of a waypoint's parametersRef, from its ConfigMap (undefined when there is none by
 * that name), checked against weft's subset and against what weft renders: both callers (the
 * reconciler on Kubernetes, the lab) report the problem as istiod, Accepted False with reason
 * InvalidParameters (the Gateway API's rule for a parametersRef that is missing, of another kind
 * or malformed), and then deploy nothing new: what the last good version deployed stays.
 */
export function waypointParameters(w: Waypoint, configMap: { data?: unknown } | undefined): { overlay?: WaypointOverlay } | { problem: WaypointProblem } {
  const name = checkParametersRef(w.parametersRef);
  if (name === undefined) return {};
  if (typeof name === 'object') return { problem: name };
  try {
    const overlay = overlayFromConfigMap({ namespace: w.namespace, name }, configMap);
    // Applied once to what weft renders (names do not depend on the options) so a clash is found now.
    renderWaypoint(w, { image: '-', controlAddress: '-', trustDomain: '-' }, overlay);
    return { overlay };
  } catch (e) {
    if (!(e instanceof OverlayError)) throw e;
    const msg = e.message.startsWith('ConfigMap ') ? e.message : `ConfigMap ${w.namespace}/${name}: key deployment: ${e.message}`;
    return { problem: { reason: 'InvalidParameters', field: 'spec.infrastructure.parametersRef', message: msg } };
  }
}

/** The HBONE listener's allowedRoutes.namespaces; a selector weft cannot evaluate admits only the waypoint's namespace. */
function allowedFrom(l: GatewayListener, at: string, ignored: WaypointNote[]): { from: WaypointFrom } | { problem: WaypointProblem } {
  const field = `${at}.allowedRoutes.namespaces`;
  const bad = (f: string, message: string) => ({ problem: { reason: 'ListenersNotValid' as const, field: f, message } });
  if (l.allowedRoutes !== undefined && !isObject(l.allowedRoutes)) return bad(`${at}.allowedRoutes`, 'expected an object');
  const ns = l.allowedRoutes?.namespaces;
  if (ns !== undefined && !isObject(ns)) return bad(field, 'expected an object');
  const from = ns?.from ?? 'Same';
  if (from === 'Same') return { from: { same: true } };
  if (from === 'All') return { from: { all: true } };
  if (from !== 'Selector') return bad(`${field}.from`, `unknown value ${JSON.stringify(from)} (Same, All or Selector)`);
  const sel = ns!.selector ?? {};
  if (!isObject(sel)) return bad(`${field}.selector`, 'expected an object');
  if (sel.matchExpressions !== undefined) {
    ignored.push({ field: `${field}.selector.matchExpressions`, message: "not supported by weft: only the waypoint's own namespace may use it" });
    return { from: { same: true } };
  }
  if (!isStringMap(sel.matchLabels)) return bad(`${field}.selector.matchLabels`, 'expected a map of strings to strings');
  return { from: { matchLabels: { ...sel.matchLabels } } };
}

export interface WaypointRenderOptions {
  image: string;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  /** host:port of the control plane's authenticated xDS (15012). */
  controlAddress: string;
  /** host:port of the CA; the control plane's address unless given. */
  caAddress?: string;
  trustDomain: string;
  /** Container resources; Istio's waypoint defaults unless given. */
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
}

/** Istio's global.waypoint.resources defaults. */
export const WAYPOINT_RESOURCES = Object.freeze({ requests: { cpu: '100m', memory: '128Mi' }, limits: { cpu: '2', memory: '1Gi' } });

/** Bytes in a Kubernetes memory quantity (`512Mi`, `1Gi`, `1G`, `1000000`); undefined if it is not one. */
export function memoryBytes(q: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(q);
  if (!m) return undefined;
  const unit = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 }[m[2] ?? ''] ?? 1;
  return Math.floor(Number(m[1]) * unit);
}

/**
 * The waypoint's Node options (the Deployment's NODE_OPTIONS), measured with
 * bench/tools/waypoint-rss.ts at 1000 req/s (RSS at the end of 15 s). Left to itself V8 grows the
 * semi-spaces new objects are allocated in to 16 MB, and lets the old generation grow in steps
 * scaled by its limit, a quarter of the machine's memory (4 GB on the bench's machine) when no
 * cgroup limit is seen: 112-140 MB of RSS for a live heap of ~16 MB. 4 MB semi-spaces alone: 107 MB at the peak;
 * with an old-space limit of half the container's memory limit (512 MB for Istio's 1Gi, the other
 * half left to buffers, TLS and code): 85-91 MB. 2 MB semi-spaces saved 2-4 MB more but tripled the
 * scavenges' time (a scavenge per ~25 requests: each request leaves ~75 KB of garbage).
 */
export function waypointNodeOptions(resources: WaypointRenderOptions['resources'] = WAYPOINT_RESOURCES): string {
  const limit = resources.limits?.memory === undefined ? undefined : memoryBytes(resources.limits.memory);
  const oldSpaceMb = limit === undefined ? undefined : Math.max(64, Math.floor(limit / 2 ** 21));
  return ['--max-semi-space-size=4', ...(oldSpaceMb === undefined ? [] : [`--max-old-space-size=${oldSpaceMb}`])].join(' ');
}

/**
 * The argv of the waypoint's container: `weft waypoint run` and its flags. This is the contract
 * with the waypoint process (src/waypoint): what it is told, where its credentials are.
 */
export function waypointArgs(w: Waypoint, o: WaypointRenderOptions): string[] {
  return [
    'waypoint',
    'run',
    '--control-address', o.controlAddress,
    '--ca-address', o.caAddress ?? o.controlAddress,
    '--token-file', WAYPOINT_TOKEN_PATH,
    '--root-cert', WAYPOINT_ROOT_CERT_PATH,
    '--trust-domain', o.trustDomain,
    '--gateway', w.name,
    '--waypoint-for', w.for,
    ...(w.forServiceAccount ? ['--for-service-account', w.forServiceAccount] : []),
    '--mesh-address', `0.0.0.0:${WAYPOINT_PORTS.mesh}`,
    '--status-address', `0.0.0.0:${WAYPOINT_PORTS.status}`,
    '--metrics-address', `0.0.0.0:${WAYPOINT_PORTS.metrics}`,
  ];
}

export interface RenderedWaypoint {
  serviceAccount: RenderedObject;
  deployment: RenderedObject;
  service: RenderedObject;
}

export interface RenderedObject {
  apiVersion: string;
  kind: 'ServiceAccount' | 'Deployment' | 'Service';
  metadata: { name: string; namespace: string; labels: Record<string, string>; annotations?: Record<string, string>; ownerReferences?: OwnerReference[] };
  spec?: Record<string, unknown>;
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
}

/** Annotations of the Gateway's infrastructure that istiod does not copy onto what it renders. */
const NOT_COPIED = ['kubectl.kubernetes.io/last-applied-configuration', 'gateway.istio.io/name-override', SERVICE_ACCOUNT_ANNOTATION, 'gateway.istio.io/controller-version'];

/**
 * The ServiceAccount, Deployment and Service of a waypoint, owned by its Gateway when it has a uid;
 * the Deployment with the overlay of its parametersRef (from waypointParameters) merged in.
 */
export function renderWaypoint(w: Waypoint, o: WaypointRenderOptions, overlay?: WaypointOverlay): RenderedWaypoint {
  const rendered = renderBase(w, { ...o, resources: overlayResources(o.resources ?? WAYPOINT_RESOURCES, overlay) });
  return overlay ? { ...rendered, deployment: applyOverlay(rendered.deployment, overlay) } : rendered;
}

function renderBase(w: Waypoint, o: WaypointRenderOptions): RenderedWaypoint {
  const owner: OwnerReference[] | undefined = w.uid ? [{ apiVersion: GATEWAY_API_VERSION, kind: 'Gateway', name: w.name, uid: w.uid }] : undefined;
  const annotations = Object.fromEntries(Object.entries(w.infrastructure.annotations).filter(([k]) => !NOT_COPIED.includes(k)));
  const base = { ...w.infrastructure.labels, [GATEWAY_NAME_LABEL]: w.name, [GATEWAY_CLASS_LABEL]: WAYPOINT_CLASS };
  const managed = { ...base, [MANAGED_LABEL]: MANAGED_VALUE };
  const meta = (labels: Record<string, string>, extra: Record<string, string> = {}) => ({
    name: w.name,
    namespace: w.namespace,
    labels,
    ...(Object.keys({ ...extra, ...annotations }).length > 0 && { annotations: { ...extra, ...annotations } }),
    ...(owner && { ownerReferences: owner }),
  });
  const fieldEnv = (name: string, fieldPath: string) => ({ name, valueFrom: { fieldRef: { fieldPath } } });
  const httpProbe = { httpGet: { path: '/healthz/ready', port: WAYPOINT_PORTS.status, scheme: 'HTTP' }, successThreshold: 1, timeoutSeconds: 1 };
  return {
    serviceAccount: { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { ...meta(base), name: w.serviceAccount } },
    deployment: {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: meta(managed),
      spec: {
        selector: { matchLabels: { [GATEWAY_NAME_LABEL]: w.name } },
        template: {
          metadata: {
            annotations: { ...annotations, 'istio.io/rev': 'default', 'prometheus.io/path': '/stats/prometheus', 'prometheus.io/port': String(WAYPOINT_PORTS.metrics), 'prometheus.io/scrape': 'true' },
            labels: {
              'sidecar.istio.io/inject': 'false',
              // The node agent must not capture the waypoint's own traffic: it already speaks HBONE.
              'istio.io/dataplane-mode': 'none',
              'service.istio.io/canonical-name': w.name,
              'service.istio.io/canonical-revision': 'latest',
              ...managed,
            },
          },
          spec: {
            serviceAccountName: w.serviceAccount,
            // The waypoint reads nothing from the Kubernetes API: only its projected istio-ca token.
            automountServiceAccountToken: false,
            terminationGracePeriodSeconds: WAYPOINT_TERMINATION_GRACE_S,
            containers: [
              {
                name: 'istio-proxy',
                image: o.image,
                ...(o.imagePullPolicy && { imagePullPolicy: o.imagePullPolicy }),
                args: waypointArgs(w, o),
                env: [
                  fieldEnv('POD_NAME', 'metadata.name'),
                  fieldEnv('POD_NAMESPACE', 'metadata.namespace'),
                  fieldEnv('INSTANCE_IP', 'status.podIP'),
                  fieldEnv('SERVICE_ACCOUNT', 'spec.serviceAccountName'),
                  fieldEnv('NODE_NAME', 'spec.nodeName'),
                  { name: 'ISTIO_META_WORKLOAD_NAME', value: w.name },
                  { name: 'TRUST_DOMAIN', value: o.trustDomain },
                  { name: 'NODE_OPTIONS', value: waypointNodeOptions(o.resources) },
                  // glibc's fixed mmap threshold, as for the agent and the control plane (src/api/process-env.ts):
                  // freed TLS and HTTP/2 buffers go back to the system. 1.5-2 MB less RSS at 300 req/s.
                  { name: 'GLIBC_TUNABLES', value: AGENT_GLIBC_TUNABLES },
                ],
                ports: [
                  { name: 'mesh', containerPort: WAYPOINT_PORTS.mesh, protocol: 'TCP' },
                  { name: 'metrics', containerPort: WAYPOINT_PORTS.metrics, protocol: 'TCP' },
                  { name: 'status-port', containerPort: WAYPOINT_PORTS.status, protocol: 'TCP' },
                ],
                startupProbe: { ...httpProbe, failureThreshold: 30, initialDelaySeconds: 1, periodSeconds: 1 },
                readinessProbe: { ...httpProbe, failureThreshold: 4, initialDelaySeconds: 0, periodSeconds: 15 },
                resources: structuredClone(o.resources ?? WAYPOINT_RESOURCES),
                securityContext: {
                  privileged: false,
                  runAsUser: 1337,
                  runAsGroup: 1337,
                  runAsNonRoot: true,
                  allowPrivilegeEscalation: false,
                  readOnlyRootFilesystem: true,
                  capabilities: { drop: ['ALL'] },
                },
                volumeMounts: [
                  { name: 'istio-token', mountPath: '/var/run/secrets/tokens', readOnly: true },
                  { name: 'istiod-ca-cert', mountPath: '/var/run/secrets/istio', readOnly: true },
                  { name: 'tmp', mountPath: '/tmp' },
                ],
              },
            ],
            volumes: [
              // Audience istio-ca: the token the CA and xDS accept, useless against the Kubernetes API.
              { name: 'istio-token', projected: { sources: [{ serviceAccountToken: { audience: 'istio-ca', expirationSeconds: 43200, path: 'istio-token' } }] } },
              { name: 'istiod-ca-cert', configMap: { name: ROOT_CERT_CONFIGMAP } },
              { name: 'tmp', emptyDir: {} },
            ],
          },
        },
      },
    },
    service: {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(base, { 'networking.istio.io/traffic-distribution': 'PreferClose' }),
      spec: {
        type: 'ClusterIP',
        ipFamilyPolicy: 'PreferDualStack',
        selector: { [GATEWAY_NAME_LABEL]: w.name },
        // As istiod: status-port first, then the listener, appProtocol = its protocol in lowercase.
        ports: [
          { name: 'status-port', port: WAYPOINT_PORTS.status, protocol: 'TCP', appProtocol: 'tcp' },
          { name: 'mesh', port: WAYPOINT_PORTS.mesh, protocol: 'TCP', appProtocol: 'hbone' },
        ],
      },
    },
  };
}

/** What the Gateway's status says: why it is not accepted, or how far its deployment got. */
export type WaypointState =
  | { problem: WaypointProblem }
  | { readyReplicas: number; address?: string; conflict?: string; ignored?: readonly WaypointNote[] };

/**
 * The Gateway's status for a state: Accepted, Programmed (True once a replica is ready and the
 * Service has its address), and the Service's address. Conditions that did not change keep their
 * lastTransitionTime, so an unchanged state renders an equal status.
 */
export function waypointStatus(gw: GatewayObject, state: WaypointState, now = new Date()): GatewayStatus {
  const previous = gw.status?.conditions ?? [];
  const generation = typeof gw.metadata.generation === 'number' ? { observedGeneration: gw.metadata.generation } : {};
  const cond = (type: string, ok: boolean, reason: string, message: string): Condition => {
    const status = ok ? 'True' : 'False';
    const prev = previous.find((c) => c.type === type);
    const same = prev && prev.status === status && prev.reason === reason && prev.message === message;
    return { type, status, reason, message, lastTransitionTime: same ? prev.lastTransitionTime : now.toISOString().replace(/\.\d+Z$/, 'Z'), ...generation };
  };
  if ('problem' in state) {
    const msg = `${state.problem.field}: ${state.problem.message}`;
    return { conditions: [cond('Accepted', false, state.problem.reason, msg), cond('Programmed', false, 'Invalid', `not accepted: ${msg}`)] };
  }
  // What weft ignores is said where users look (the model reports the same notes as problems).
  const notes = state.ignored?.length ? `; ${state.ignored.map((n) => `${n.field}: ${n.message}`).join('; ')}` : '';
  const accepted = cond('Accepted', true, 'Accepted', `Resource accepted${notes}`);
  if (state.conflict) return { conditions: [accepted, cond('Programmed', false, 'Invalid', state.conflict)] };
  const addresses = state.address ? [{ type: 'IPAddress' as const, value: state.address }] : [];
  const programmed =
    state.readyReplicas > 0 && state.address
      ? cond('Programmed', true, 'Programmed', 'Resource programmed, assigned to service(s)')
      : cond('Programmed', false, state.address ? 'Pending' : 'AddressNotAssigned', state.address ? 'Deployment has no ready replica yet' : 'Service has no cluster IP yet');
  return { conditions: [accepted, programmed], addresses };
}

/** The Gateway a waypoint apply writes (as `istioctl waypoint generate`). */
export function waypointGateway(o: { name: string; namespace: string; for?: WaypointFor; forServiceAccount?: string; serviceAccount?: string }): GatewayObject {
  const labels: Record<string, string> = o.for && o.for !== 'service' ? { [WAYPOINT_FOR_LABEL]: o.for } : {};
  const annotations: Record<string, string> = {
    ...(o.forServiceAccount && { [FOR_SERVICE_ACCOUNT_ANNOTATION]: o.forServiceAccount }),
    ...(o.serviceAccount && { [SERVICE_ACCOUNT_ANNOTATION]: o.serviceAccount }),
  };
  const gw: GatewayObject = {
    apiVersion: GATEWAY_API_VERSION,
    kind: 'Gateway',
    metadata: {
      name: o.name,
      namespace: o.namespace,
      ...(Object.keys(labels).length > 0 && { labels }),
      ...(Object.keys(annotations).length > 0 && { annotations }),
    },
    spec: { gatewayClassName: WAYPOINT_CLASS, listeners: [{ name: 'mesh', port: WAYPOINT_PORTS.mesh, protocol: 'HBONE' }] },
  };
  const checked = checkWaypoint(gw);
  if ('problem' in checked) throw new Error(`waypoint ${o.namespace}/${o.name}: ${checked.problem.field}: ${checked.problem.message}`);
  return gw;
}

/**
 * The objects that enroll in a waypoint by label (istio.io/use-waypoint, and
 * istio.io/use-waypoint-namespace for another namespace's): Namespaces, Services, Pods,
 * ServiceEntries, as `kind/namespace/name`. `none` opts out and uses nothing.
 */
export function waypointUsers(waypoint: { name: string; namespace: string }, objects: readonly { kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> } }[]): string[] {
  const users = new Set<string>();
  for (const o of objects) {
    if (!['Namespace', 'Service', 'Pod', 'ServiceEntry'].includes(o.kind)) continue;
    const labels = o.metadata.labels ?? {};
    if (labels[USE_WAYPOINT_LABEL] !== waypoint.name) continue;
    const home = o.kind === 'Namespace' ? o.metadata.name : (o.metadata.namespace ?? 'default');
    if ((labels[USE_WAYPOINT_NAMESPACE_LABEL] ?? home) !== waypoint.namespace) continue;
    users.add(o.kind === 'Namespace' ? `Namespace/${o.metadata.name}` : `${o.kind}/${home}/${o.metadata.name}`);
  }
  return [...users].sort();
}
