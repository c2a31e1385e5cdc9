// The Istio CRDs weft reads, with compact structural schemas: the fields weft interprets are typed
// (so `kubectl apply` rejects obvious mistakes), everything else is kept as is
// (x-kubernetes-preserve-unknown-fields), as Istio's own schemas are far larger. Versions, plurals
// and short names are Istio's, so existing Istio YAML and tooling apply unchanged. Gateway API
// CRDs are not here: users install the upstream release (see daemonset/README.md).
import type { ICustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition';
import type { IJSONSchemaProps } from 'kubernetes-models/apiextensions.k8s.io/v1/JSONSchemaProps';

type Schema = IJSONSchemaProps;

const str = (extra: Schema = {}): Schema => ({ type: 'string', ...extra });
const strList: Schema = { type: 'array', items: { type: 'string' } };
const strMap: Schema = { type: 'object', additionalProperties: { type: 'string' } };
const anyObject: Schema = { type: 'object', 'x-kubernetes-preserve-unknown-fields': true };
const objList = (properties?: Record<string, Schema>): Schema => ({ type: 'array', items: { ...anyObject, ...(properties && { properties }) } });
const port: Schema = { type: 'integer', format: 'int32', minimum: 0, maximum: 65535 };
const selector: Schema = { type: 'object', properties: { matchLabels: strMap } };
const targetRef: Schema = { ...anyObject, properties: { group: str(), kind: str(), name: str(), namespace: str() } };
const mtlsMode = str({ enum: ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'] });

interface CrdSpec {
  group: 'security.istio.io' | 'networking.istio.io' | 'telemetry.istio.io';
  kind: string;
  plural: string;
  shortNames: string[];
  /** The typed part of `spec`; the rest is preserved. */
  spec: Record<string, Schema>;
  columns?: { name: string; jsonPath: string; type: string; description: string }[];
}

const CRDS: CrdSpec[] = [
  {
    group: 'security.istio.io',
    kind: 'AuthorizationPolicy',
    plural: 'authorizationpolicies',
    shortNames: ['ap'],
    spec: {
      selector,
      targetRef,
      targetRefs: { type: 'array', items: targetRef },
      action: str({ enum: ['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'] }),
      provider: anyObject,
      rules: objList({ from: objList(), to: objList(), when: objList() }),
    },
    columns: [{ name: 'Action', jsonPath: '.spec.action', type: 'string', description: 'The operation to take.' }],
  },
  {
    group: 'security.istio.io',
    kind: 'PeerAuthentication',
    plural: 'peerauthentications',
    shortNames: ['pa'],
    spec: {
      selector,
      mtls: { type: 'object', properties: { mode: mtlsMode } },
      portLevelMtls: { type: 'object', additionalProperties: { type: 'object', properties: { mode: mtlsMode } } },
    },
    columns: [{ name: 'Mode', jsonPath: '.spec.mtls.mode', type: 'string', description: 'Defines the mTLS mode used for peer authentication.' }],
  },
  {
    group: 'security.istio.io',
    kind: 'RequestAuthentication',
    plural: 'requestauthentications',
    shortNames: ['ra'],
    spec: { selector, targetRef, targetRefs: { type: 'array', items: targetRef }, jwtRules: objList({ issuer: str(), audiences: strList, jwksUri: str() }) },
  },
  {
    group: 'telemetry.istio.io',
    kind: 'Telemetry',
    plural: 'telemetries',
    shortNames: ['telemetry'],
    spec: {
      selector,
      targetRef,
      targetRefs: { type: 'array', items: targetRef },
      tracing: objList({ providers: objList({ name: str() }), randomSamplingPercentage: { type: 'number', minimum: 0, maximum: 100 }, disableSpanReporting: { type: 'boolean' }, customTags: { type: 'object', additionalProperties: anyObject } }),
      accessLogging: objList({ providers: objList({ name: str() }), disabled: { type: 'boolean' } }),
      metrics: objList({ providers: objList({ name: str() }), overrides: objList() }),
    },
  },
  {
    group: 'networking.istio.io',
    kind: 'ServiceEntry',
    plural: 'serviceentries',
    shortNames: ['se'],
    spec: {
      hosts: strList,
      addresses: strList,
      ports: objList({ number: port, protocol: str(), name: str(), targetPort: port }),
      location: str({ enum: ['MESH_EXTERNAL', 'MESH_INTERNAL'] }),
      resolution: str({ enum: ['NONE', 'STATIC', 'DNS', 'DNS_ROUND_ROBIN'] }),
      endpoints: objList({ address: str(), ports: { type: 'object', additionalProperties: { type: 'integer', format: 'int32' } }, labels: strMap, network: str(), serviceAccount: str() }),
      workloadSelector: { type: 'object', properties: { labels: strMap } },
      exportTo: strList,
      subjectAltNames: strList,
    },
    columns: [
      { name: 'Hosts', jsonPath: '.spec.hosts', type: 'string', description: 'The hosts associated with the ServiceEntry.' },
      { name: 'Location', jsonPath: '.spec.location', type: 'string', description: 'Whether the service is external to the mesh or part of the mesh (MESH_EXTERNAL or MESH_INTERNAL).' },
      { name: 'Resolution', jsonPath: '.spec.resolution', type: 'string', description: 'Service resolution mode for the hosts (NONE, STATIC, or DNS).' },
    ],
  },
  {
    group: 'networking.istio.io',
    kind: 'WorkloadEntry',
    plural: 'workloadentries',
    shortNames: ['we'],
    spec: { address: str(), ports: { type: 'object', additionalProperties: { type: 'integer', format: 'int32' } }, labels: strMap, network: str(), locality: str(), weight: { type: 'integer', format: 'int64' }, serviceAccount: str() },
    columns: [{ name: 'Address', jsonPath: '.spec.address', type: 'string', description: 'Address associated with the network endpoint.' }],
  },
  {
    group: 'networking.istio.io',
    kind: 'DestinationRule',
    plural: 'destinationrules',
    shortNames: ['dr'],
    spec: { host: str(), trafficPolicy: anyObject, subsets: objList({ name: str(), labels: strMap }), exportTo: strList, workloadSelector: { type: 'object', properties: { matchLabels: strMap } } },
    columns: [{ name: 'Host', jsonPath: '.spec.host', type: 'string', description: 'The name of a service from the service registry.' }],
  },
  {
    group: 'networking.istio.io',
    kind: 'VirtualService',
    plural: 'virtualservices',
    shortNames: ['vs'],
    spec: { hosts: strList, gateways: strList, http: objList(), tcp: objList(), tls: objList(), exportTo: strList },
    columns: [
      { name: 'Gateways', jsonPath: '.spec.gateways', type: 'string', description: 'The names of gateways and sidecars that should apply these routes.' },
      { name: 'Hosts', jsonPath: '.spec.hosts', type: 'string', description: 'The destination hosts to which traffic is being sent.' },
    ],
  },
];

/** Served versions as Istio serves them; the schemas are the same for all, so no conversion. */
const VERSIONS: Record<CrdSpec['group'], { names: string[]; storage: string }> = {
  'security.istio.io': { names: ['v1', 'v1beta1'], storage: 'v1beta1' },
  'networking.istio.io': { names: ['v1', 'v1beta1', 'v1alpha3'], storage: 'v1alpha3' },
  'telemetry.istio.io': { names: ['v1', 'v1alpha1'], storage: 'v1alpha1' },
};

export function istioCrds(): ICustomResourceDefinition[] {
  return CRDS.map((c) => {
    const { names, storage } = VERSIONS[c.group];
    const schema: Schema = {
      type: 'object',
      properties: {
        spec: { ...anyObject, properties: c.spec },
        status: anyObject,
      },
    };
    return {
      apiVersion: 'apiextensions.k8s.io/v1',
      kind: 'CustomResourceDefinition',
      metadata: { name: `${c.plural}.${c.group}`, labels: { 'app.kubernetes.io/part-of': 'weft' } },
      spec: {
        group: c.group,
        names: { kind: c.kind, listKind: `${c.kind}List`, plural: c.plural, singular: c.kind.toLowerCase(), shortNames: c.shortNames, categories: ['istio-io', c.group.replaceAll('.', '-')] },
        scope: 'Namespaced',
        versions: names.map((name) => ({
          name,
          served: true,
          storage: name === storage,
          schema: { openAPIV3Schema: schema },
          subresources: { status: {} },
          additionalPrinterColumns: [...(c.columns ?? []), { name: 'Age', jsonPath: '.metadata.creationTimestamp', type: 'date', description: 'CreationTimestamp of the resource.' }],
        })),
      },
    };
  });
}
