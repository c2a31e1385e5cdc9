// weft on a Kubernetes cluster, as data: the namespace, the control plane (Deployment, Service,
// RBAC), the node agent DaemonSet with its CNI installer, the Istio CRDs and a waypoint template.
// Objects are plain values typed by kubernetes-models (types only, nothing of it runs here);
// render.ts turns them into files. Every path and port the agent and the CNI plugin agree on is
// a constant below, passed on the command line, never assumed on both sides.
import type { IGateway } from '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/Gateway';
import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import type { ICustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition';
import type { IClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import type { IClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import type { IRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import type { IRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import type { IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import type { INamespace } from 'kubernetes-models/v1/Namespace';
import type { IService } from 'kubernetes-models/v1/Service';
import type { IServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import type { IVolume } from 'kubernetes-models/v1/Volume';
import { istioCrds } from './crds.ts';
import type { InstallOptions } from './options.ts';
import { CONTROL_PLANE_ENV, agentEnv } from '../api/process-env.ts';

export type K8sObject = { apiVersion: string; kind: string; metadata?: { name?: string; namespace?: string } };

export const CONTROL = 'weft-control';
export const AGENT = 'weft-agent';
/** Audience of the agents' projected token, as Istio's (the control plane reviews it). */
export const TOKEN_AUDIENCE = 'istio-ca';
/** Istio's name for the ConfigMap holding the mesh root certificate. */
export const ROOT_CERT_CONFIGMAP = 'istio-ca-root-cert';
/** Istio's name for the Secret keeping the self-signed root (src/control/ca/root-secret.ts). */
export const CA_SECRET = 'istio-ca-secret';
/** The Lease control plane replicas elect their leader with (src/control/leader.ts). */
export const LEADER_LEASE = 'weft-control-leader';
/**
 * A control plane replica's drain on SIGTERM (src/control/main.ts): xDS streams ended spread over
 * 5 s so a node fleet does not reconnect at once, exit by 20 s; the pod's grace period is above it.
 */
const DRAIN = { spreadMs: 5000, deadlineMs: 20_000, gracePeriodSeconds: 30 };

/** Host paths shared by the agent, the CNI installer and the CNI plugin (which runs on the host). */
export const HOST = {
  weftRun: '/var/run/weft',
  socket: '/var/run/weft/agent.sock',
  agentState: '/var/run/weft/agent',
  cniRuntime: '/var/lib/weft/cni',
  netns: '/var/run/netns',
  cgroup: '/sys/fs/cgroup',
  bpffs: '/sys/fs/bpf',
} as const;

const PORTS = { xds: 15010, xdsTls: 15012, monitoring: 15014, metrics: 15020, readiness: 15021 } as const;

const partOf = { 'app.kubernetes.io/part-of': 'weft' };
const labels = (app: string, component: string) => ({ app, 'app.kubernetes.io/name': app, 'app.kubernetes.io/component': component, ...partOf });

/** A ClusterRole and the binding that grants it to one ServiceAccount (same name, same labels). */
function clusterRole(name: string, objLabels: Record<string, string>, rules: IClusterRole['rules'], account: { name: string; namespace: string }): [IClusterRole, IClusterRoleBinding] {
  return [
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name, labels: objLabels }, rules },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name, labels: objLabels },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
      subjects: [{ kind: 'ServiceAccount', ...account }],
    },
  ];
}

export const controlHost = (o: InstallOptions) => `${CONTROL}.${o.namespace}.svc`;

export function namespace(o: InstallOptions): INamespace {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name: o.namespace, labels: { ...partOf } } };
}

// ---------------------------------------------------------------------------------------------
// Control plane

export function controlPlane(o: InstallOptions): [IServiceAccount, IClusterRole, IClusterRoleBinding, IClusterRole, IClusterRoleBinding, IClusterRole, IClusterRoleBinding, IRole, IRoleBinding, IRole, IRoleBinding, IService, IDeployment, IPodDisruptionBudget] {
  const meta = { name: CONTROL, namespace: o.namespace, labels: labels(CONTROL, 'control-plane') };
  const read = ['get', 'list', 'watch'];
  const clusterName = `${CONTROL}-${o.namespace}`;
  const publisherName = `${CONTROL}-root-cert-${o.namespace}`;
  // Plugged: the cacerts Secret mounted. Self-signed: the root is kept in the Secret
  // istio-ca-secret, read and created through the API (the Role below), never in the pod.
  const plugged = o.caSource === 'plugged';
  const caDir = '/etc/cacerts';
  const caVolumes: IVolume[] = plugged ? [{ name: 'cacerts', secret: { secretName: o.cacertsSecret, optional: false, defaultMode: 0o400 } }] : [];
  return [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta },
    // Read only, the kinds the mesh model is built from (src/control/config/kube-api.ts:
    // KUBE_RESOURCES); plus reviewing agents' tokens.
    ...clusterRole(
      clusterName,
      meta.labels,
      [
        { apiGroups: [''], resources: ['namespaces', 'pods', 'services', 'serviceaccounts', 'nodes', 'configmaps'], verbs: read },
        { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: read },
        { apiGroups: ['security.istio.io'], resources: ['authorizationpolicies', 'peerauthentications', 'requestauthentications'], verbs: read },
        { apiGroups: ['telemetry.istio.io'], resources: ['telemetries'], verbs: read },
        { apiGroups: ['networking.istio.io'], resources: ['serviceentries', 'workloadentries', 'destinationrules', 'virtualservices'], verbs: read },
        { apiGroups: ['gateway.networking.k8s.io'], resources: ['gateways', 'httproutes', 'grpcroutes'], verbs: read },
        { apiGroups: ['gateway.envoyproxy.io'], resources: ['backendtrafficpolicies'], verbs: read },
        { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
      ],
      { name: CONTROL, namespace: o.namespace },
    ),
    // Deploying waypoints (src/control/gateway/waypoints.ts), as istiod: the ServiceAccount,
    // Deployment and Service of each Gateway of class istio-waypoint, and the Gateway's status.
    // Kept apart from the read-only role above. Objects are found by label, so list and watch
    // cannot be limited by name; the reconciler touches only what a waypoint Gateway owns. The
    // ConfigMaps of Gateways' parametersRef are read (get, watch) under the read-only role above.
    ...clusterRole(
      `${CONTROL}-waypoints-${o.namespace}`,
      meta.labels,
      [
        { apiGroups: ['apps'], resources: ['deployments'], verbs: ['get', 'list', 'watch', 'create', 'patch', 'delete'] },
        { apiGroups: [''], resources: ['services', 'serviceaccounts'], verbs: ['get', 'list', 'watch', 'create', 'patch', 'delete'] },
        { apiGroups: ['gateway.networking.k8s.io'], resources: ['gateways/status'], verbs: ['patch', 'update'] },
      ],
      { name: CONTROL, namespace: o.namespace },
    ),
    // Publishing the mesh root certificate in every namespace, as istiod does
    // (src/control/ca/root-cert-configmap.ts), kept apart from the read-only role above. Only
    // that ConfigMap: list and watch ask for it by field selector (metadata.name), which is what
    // lets resourceNames limit them; create cannot be limited by name.
    ...clusterRole(
      publisherName,
      meta.labels,
      [
        { apiGroups: [''], resources: ['configmaps'], verbs: ['create'] },
        { apiGroups: [''], resources: ['configmaps'], resourceNames: [ROOT_CERT_CONFIGMAP], verbs: ['get', 'list', 'watch', 'update'] },
      ],
      { name: CONTROL, namespace: o.namespace },
    ),
    // The self-signed root's Secret in the control plane's own namespace: read by every replica,
    // created by the first. create cannot be limited by name; get can.
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: { ...meta, name: `${CONTROL}-ca-secret` },
      rules: [
        { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
        { apiGroups: [''], resources: ['secrets'], resourceNames: [CA_SECRET], verbs: ['get'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { ...meta, name: `${CONTROL}-ca-secret` },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: `${CONTROL}-ca-secret` },
      subjects: [{ kind: 'ServiceAccount', name: CONTROL, namespace: o.namespace }],
    },
    // Leader election among the replicas: the one Lease, in the control plane's namespace. The
    // leader alone writes root-cert ConfigMaps and waypoint Deployments. create cannot be limited by name.
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: { ...meta, name: `${CONTROL}-leader-election` },
      rules: [
        { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
        { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: [LEADER_LEASE], verbs: ['get', 'update'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { ...meta, name: `${CONTROL}-leader-election` },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: `${CONTROL}-leader-election` },
      subjects: [{ kind: 'ServiceAccount', name: CONTROL, namespace: o.namespace }],
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta,
      spec: {
        type: 'ClusterIP',
        selector: { app: CONTROL },
        ports: [
          ...(o.plaintextXds ? [{ name: 'grpc-xds', port: PORTS.xds, targetPort: PORTS.xds, protocol: 'TCP' as const }] : []),
          { name: 'grpc-xds-tls', port: PORTS.xdsTls, targetPort: PORTS.xdsTls, protocol: 'TCP' },
          { name: 'http-monitoring', port: PORTS.monitoring, targetPort: PORTS.monitoring, protocol: 'TCP' },
        ],
      },
    },
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: meta,
      spec: {
        // Two replicas behind the Service; a roll adds the new one before removing an old one, so
        // agents always have a replica to move to (the old one drains on SIGTERM).
        replicas: 2,
        strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
        selector: { matchLabels: { app: CONTROL } },
        template: {
          metadata: {
            labels: labels(CONTROL, 'control-plane'),
            annotations: { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(PORTS.monitoring), 'prometheus.io/path': '/metrics' },
          },
          spec: {
            serviceAccountName: CONTROL,
            terminationGracePeriodSeconds: DRAIN.gracePeriodSeconds,
            // Replicas on different nodes where there are several: a node's loss takes one.
            affinity: { podAntiAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [{ weight: 100, podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: { app: CONTROL } } } }] } },
            securityContext: { runAsNonRoot: true, runAsUser: 1337, runAsGroup: 1337, fsGroup: 1337, seccompProfile: { type: 'RuntimeDefault' } },
            containers: [
              {
                name: 'control',
                image: o.image,
                imagePullPolicy: o.imagePullPolicy,
                args: [
                  'control',
                  '--in-cluster',
                  ...(plugged ? ['--ca-dir', caDir] : ['--ca-namespace', o.namespace]),
                  '--trust-domain', o.trustDomain,
                  // Agents authenticate with their bound ServiceAccount tokens, checked by TokenReview.
                  '--agent-service-account', `${o.namespace}/${AGENT}`,
                  '--token-audience', 'istio-ca',
                  '--server-name', controlHost(o),
                  // Plaintext xDS only when asked for (--plaintext-xds): it answers anyone.
                  ...(o.plaintextXds ? ['--plain-address', `0.0.0.0:${PORTS.xds}`] : ['--no-plain-address']),
                  '--tls-address', `0.0.0.0:${PORTS.xdsTls}`,
                  '--metrics-address', `0.0.0.0:${PORTS.monitoring}`,
                  // Waypoint Gateways become Deployments of the same image, reaching 15012 by the Service's name.
                  '--waypoint-image', o.image,
                  '--waypoint-control-address', `${controlHost(o)}:${PORTS.xdsTls}`,
                  '--leader-lease', LEADER_LEASE,
                  '--drain-spread-ms', String(DRAIN.spreadMs),
                  '--drain-deadline-ms', String(DRAIN.deadlineMs),
                ],
                env: [
                  ...Object.entries(CONTROL_PLANE_ENV).map(([name, value]) => ({ name, value })),
                  // The leader election identity (with a random suffix): which replica holds the Lease.
                  { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
                ],
                ports: [
                  ...(o.plaintextXds ? [{ name: 'grpc-xds', containerPort: PORTS.xds, protocol: 'TCP' as const }] : []),
                  { name: 'grpc-xds-tls', containerPort: PORTS.xdsTls, protocol: 'TCP' },
                  { name: 'http-monitoring', containerPort: PORTS.monitoring, protocol: 'TCP' },
                ],
                readinessProbe: { httpGet: { path: '/ready', port: PORTS.monitoring }, periodSeconds: 5, failureThreshold: 3 },
                resources: { requests: { cpu: '200m', memory: '256Mi' }, limits: { memory: '2Gi' } },
                securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
                volumeMounts: [
                  ...(plugged ? [{ name: 'cacerts', mountPath: caDir, readOnly: true }] : []),
                  { name: 'tmp', mountPath: '/tmp' },
                ],
              },
            ],
            volumes: [
              ...caVolumes,
              { name: 'tmp', emptyDir: {} },
            ],
          },
        },
      },
    },
    // A node drain evicts one replica at a time: one always serves.
    { apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', metadata: meta, spec: { minAvailable: 1, selector: { matchLabels: { app: CONTROL } } } },
  ];
}

// ---------------------------------------------------------------------------------------------
// Node agent and CNI installer

/** How long a replaced or stopped agent may drain the connections it relays. */
export const AGENT_GRACE_SECONDS = 3600;

export function agent(o: InstallOptions): [IServiceAccount, IClusterRole, IClusterRoleBinding, IDaemonSet] {
  const meta = { name: AGENT, namespace: o.namespace, labels: labels(AGENT, 'node-agent') };
  const clusterName = `${AGENT}-${o.namespace}`;
  const hostPath = (name: string, path: string, type: 'Directory' | 'DirectoryOrCreate'): IVolume => ({ name, hostPath: { path, type } });
  return [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta, automountServiceAccountToken: false },
    // The CNI plugin (on the host, with this account's token) reads a new pod's and its
    // namespace's labels to decide whether to enroll it; the agent lists its node's pods at start
    // and marks enrolled ones (ambient.istio.io/redirection, through pods/status as istio-cni);
    // the installer asks whether its DaemonSet is being deleted (then it unchains the plugin).
    ...clusterRole(clusterName, meta.labels, [
      { apiGroups: [''], resources: ['pods', 'namespaces'], verbs: ['get'] },
      { apiGroups: [''], resources: ['pods'], verbs: ['list'] },
      { apiGroups: [''], resources: ['pods/status'], verbs: ['patch'] },
      { apiGroups: ['apps'], resources: ['daemonsets'], verbs: ['get'], resourceNames: [AGENT] },
    ], { name: AGENT, namespace: o.namespace }),
    {
      apiVersion: 'apps/v1',
      kind: 'DaemonSet',
      metadata: meta,
      spec: {
        selector: { matchLabels: { app: AGENT } },
        // A new agent pod starts next to the old one on each node (maxSurge) and takes its
        // listening sockets over (the handover socket is in the agent's state dir, a hostPath);
        // the old one then drains: an upgrade refuses and resets nothing.
        updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
        template: {
          metadata: {
            labels: labels(AGENT, 'node-agent'),
            annotations: { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(PORTS.metrics), 'prometheus.io/path': '/metrics' },
          },
          spec: {
            serviceAccountName: AGENT,
            // The API token (kube-api-access below) is mounted where it is used: the CNI installer
            // and the agent; the agent also has its own, audience-bound token for the control plane.
            automountServiceAccountToken: false,
            // Pod network namespaces may be given as /proc/<pid>/ns/net (dockershim-style runtimes).
            hostPID: true,
            priorityClassName: 'system-node-critical',
            // Every node, whatever its taints: a node without an agent cannot start ambient pods.
            tolerations: [{ operator: 'Exists' }],
            // A replaced agent relays what it has until it ends; this bounds it (then SIGKILL, and
            // what is left is reset). WEFT_DRAIN_DEADLINE bounds it more tightly, cleanly.
            terminationGracePeriodSeconds: AGENT_GRACE_SECONDS,
            initContainers: [
              {
                // Pins must outlive the agent container: bpffs mounted on the host, not in here.
                name: 'mount-bpffs',
                image: o.image,
                imagePullPolicy: o.imagePullPolicy,
                command: ['sh', '-c', `mountpoint -q ${HOST.bpffs} || mount -t bpf bpf ${HOST.bpffs}`],
                securityContext: { privileged: true },
                resources: { requests: { cpu: '10m', memory: '16Mi' }, limits: { memory: '64Mi' } },
                volumeMounts: [{ name: 'bpffs', mountPath: HOST.bpffs, mountPropagation: 'Bidirectional' }],
              },
            ],
            containers: [
              {
                name: 'agent',
                image: o.image,
                imagePullPolicy: o.imagePullPolicy,
                args: [
                  'agent',
                  '--node', '$(NODE_NAME)',
                  '--xds-address', `${controlHost(o)}:${PORTS.xdsTls}`,
                  '--control-server-name', controlHost(o),
                  '--root-cert', '/var/run/secrets/istio/root-cert.pem',
                  '--token-file', '/var/run/secrets/tokens/istio-token',
                  '--trust-domain', o.trustDomain,
                  '--root-namespace', o.namespace,
                  '--socket', HOST.socket,
                  '--state-dir', HOST.agentState,
                  '--pin-root', `${HOST.bpffs}/weft`,
                  '--node-netns', '/proc/1/ns/net', // the host's (hostPID): the kubelet's probe rules
                  '--metrics-port', String(PORTS.metrics),
                  '--readiness-port', String(PORTS.readiness),
                  '--in-cluster',
                ],
                env: [
                  { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
                  // Resource attributes of the access log's OTLP records (k8s.pod.name, k8s.namespace.name).
                  { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
                  { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
                  ...Object.entries(agentEnv()).map(([name, value]) => ({ name, value })),
                  // Headers (tokens) belong in a Secret: add WEFT_OTLP_LOGS_HEADERS with valueFrom.secretKeyRef.
                  ...(o.otlpLogsEndpoint ? [{ name: 'WEFT_OTLP_LOGS_ENDPOINT', value: o.otlpLogsEndpoint }] : []),
                  ...(o.podCidrs ? [{ name: 'WEFT_POD_CIDRS', value: o.podCidrs }] : []),
                ],
                ports: [
                  { name: 'http-metrics', containerPort: PORTS.metrics, protocol: 'TCP' },
                  { name: 'http-ready', containerPort: PORTS.readiness, protocol: 'TCP' },
                ],
                readinessProbe: { httpGet: { path: '/healthz/ready', port: PORTS.readiness }, periodSeconds: 5, failureThreshold: 3 },
                resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '1Gi' } },
                securityContext: {
                  // Not privileged: the capabilities BPF loading, netns entry and cgroup work need.
                  // allowPrivilegeEscalation stays unset: the API rejects false with SYS_ADMIN.
                  privileged: false,
                  runAsUser: 0,
                  runAsNonRoot: false,
                  capabilities: {
                    drop: ['ALL'],
                    add: [
                      'BPF', // load programs, create maps
                      'PERFMON', // pointer-carrying programs (sockops, sk_lookup)
                      'NET_ADMIN', // attach to cgroups and netns, in-pod iptables, socket marks
                      'NET_RAW', // raw sockets for iptables mode
                      'SYS_ADMIN', // setns into pod network namespaces, bpffs pins
                      'SYS_PTRACE', // open /proc/<pid>/ns/net of other users' processes
                      'SYS_RESOURCE', // memlock for maps on older kernels
                    ],
                  },
                  seccompProfile: { type: 'Unconfined' }, // bpf(2) and setns(2)
                  appArmorProfile: { type: 'Unconfined' },
                  seLinuxOptions: { type: 'spc_t' },
                },
                volumeMounts: [
                  { name: 'weft-run', mountPath: HOST.weftRun },
                  { name: 'netns', mountPath: HOST.netns, mountPropagation: 'HostToContainer' },
                  { name: 'cgroup', mountPath: HOST.cgroup, mountPropagation: 'HostToContainer' },
                  { name: 'bpffs', mountPath: HOST.bpffs, mountPropagation: 'HostToContainer' },
                  { name: 'istio-ca-root-cert', mountPath: '/var/run/secrets/istio', readOnly: true },
                  { name: 'weft-token', mountPath: '/var/run/secrets/tokens', readOnly: true },
                  { name: 'kube-api-access', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true },
                ],
              },
              {
                // Installs the CNI plugin on the node and chains it into the primary network's
                // conflist, keeps it there, and takes it out again when stopped.
                name: 'cni-install',
                image: o.image,
                imagePullPolicy: o.imagePullPolicy,
                args: [
                  'cni-install',
                  '--cni-bin-dir', '/host/opt/cni/bin',
                  '--cni-conf-dir', '/host/etc/cni/net.d',
                  '--install-dir', `/host${HOST.cniRuntime}`,
                  '--host-install-dir', HOST.cniRuntime,
                  '--agent-socket', HOST.socket,
                  '--exclude-namespace', 'kube-system',
                  '--exclude-namespace', o.namespace,
                ],
                resources: { requests: { cpu: '10m', memory: '64Mi' }, limits: { memory: '256Mi' } },
                securityContext: { runAsUser: 0, runAsNonRoot: false, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] }, seLinuxOptions: { type: 'spc_t' } },
                volumeMounts: [
                  { name: 'cni-bin', mountPath: '/host/opt/cni/bin' },
                  { name: 'cni-conf', mountPath: '/host/etc/cni/net.d' },
                  { name: 'cni-runtime', mountPath: `/host${HOST.cniRuntime}` },
                  { name: 'kube-api-access', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true },
                  { name: 'tmp', mountPath: '/tmp' },
                ],
              },
            ],
            volumes: [
              hostPath('weft-run', HOST.weftRun, 'DirectoryOrCreate'),
              hostPath('netns', HOST.netns, 'DirectoryOrCreate'),
              hostPath('cgroup', HOST.cgroup, 'Directory'),
              hostPath('bpffs', HOST.bpffs, 'DirectoryOrCreate'),
              hostPath('cni-bin', o.cniBinDir, 'DirectoryOrCreate'),
              hostPath('cni-conf', o.cniConfDir, 'DirectoryOrCreate'),
              hostPath('cni-runtime', HOST.cniRuntime, 'DirectoryOrCreate'),
              // The agent waits for the control plane to publish the root (the pod stays pending).
              { name: 'istio-ca-root-cert', configMap: { name: ROOT_CERT_CONFIGMAP, optional: false } },
              { name: 'weft-token', projected: { sources: [{ serviceAccountToken: { audience: TOKEN_AUDIENCE, expirationSeconds: 43_200, path: 'istio-token' } }] } },
              {
                name: 'kube-api-access',
                projected: {
                  sources: [
                    { serviceAccountToken: { expirationSeconds: 3_607, path: 'token' } },
                    { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
                    { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } },
                  ],
                },
              },
              { name: 'tmp', emptyDir: {} },
            ],
          },
        },
      },
    },
  ];
}

export function crds(): ICustomResourceDefinition[] {
  return istioCrds();
}

/** A waypoint for a namespace: apply it there, then label what should use it. */
export function waypoint(): IGateway {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name: 'waypoint', labels: { 'istio.io/waypoint-for': 'service' } },
    spec: {
      gatewayClassName: 'istio-waypoint',
      listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
    },
  };
}
