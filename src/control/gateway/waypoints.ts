// Deploying waypoints on Kubernetes, as istiod does: every Gateway of class istio-waypoint becomes
// a ServiceAccount, Deployment and Service (src/kube/waypoint.ts renders them) owned by the
// Gateway, and the Gateway's status says whether it was accepted, whether a replica is ready, and
// its Service's address. Level-triggered: any change to Gateways, Deployments or Services (a watch
// event) schedules one pass that compares everything, so a missed event costs only a delay, and a
// periodic pass repairs what a lost watch hid. Objects already there are left alone unless they
// differ; an object of the same name the Gateway does not own is never taken over (the Gateway
// says so). Objects whose Gateway is gone are deleted (the garbage collector would, via the owner
// reference; doing it here makes it prompt and keeps a cluster without it clean).
// A Gateway's spec.infrastructure.parametersRef names a ConfigMap in its namespace whose overlay of
// the Deployment is merged in (src/kube/waypoint-overlay.ts); a change to a ConfigMap a waypoint
// Gateway names schedules a pass too, and a missing or bad one is the Gateway's InvalidParameters.
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import {
  checkWaypoint,
  GATEWAY_API_VERSION,
  GATEWAY_CLASS_LABEL,
  GATEWAY_NAME_LABEL,
  isWaypointGateway,
  parametersConfigMap,
  renderWaypoint,
  waypointParameters,
  waypointStatus,
  type GatewayObject,
  type RenderedObject,
  type WaypointRenderOptions,
  type WaypointState,
  WAYPOINT_CLASS,
} from '../../kube/waypoint.ts';
import { ManagedWatch, requestJson, type HttpError } from '../config/kube-api.ts';

export interface WaypointReconcilerOptions extends WaypointRenderOptions {
  /** Quiet time after a watch event before a pass (istiod debounces 100 ms). */
  debounceMs?: number;
  /** A full pass at least this often (default 60 s). */
  resyncMs?: number;
  /** Delay before reopening a watch that ended or failed. */
  rewatchMs?: number;
}

interface Live {
  metadata: { name: string; namespace?: string; uid?: string; labels?: Record<string, string>; ownerReferences?: { kind: string; name: string; uid: string }[] };
  spec?: { clusterIP?: string };
  status?: { readyReplicas?: number };
}

const RESOURCES = {
  Gateway: '/apis/gateway.networking.k8s.io/v1',
  Deployment: '/apis/apps/v1',
  Service: '/api/v1',
  ServiceAccount: '/api/v1',
  ConfigMap: '/api/v1',
} as const;
const PLURAL = { Gateway: 'gateways', Deployment: 'deployments', Service: 'services', ServiceAccount: 'serviceaccounts', ConfigMap: 'configmaps' } as const;
type Kind = keyof typeof RESOURCES;

const collection = (kind: Kind) => `${RESOURCES[kind]}/${PLURAL[kind]}`;
const inNamespace = (kind: Kind, ns: string) => `${RESOURCES[kind]}/namespaces/${encodeURIComponent(ns)}/${PLURAL[kind]}`;
const objectPath = (kind: Kind, ns: string, name: string) => `${inNamespace(kind, ns)}/${encodeURIComponent(name)}`;

/** Is every field of `want` present with the same value in `have`? (The server adds defaults.) */
export function contains(have: unknown, want: unknown): boolean {
  if (Array.isArray(want)) return Array.isArray(have) && have.length === want.length && want.every((w, i) => contains(have[i], w));
  if (typeof want === 'object' && want !== null) {
    if (typeof have !== 'object' || have === null || Array.isArray(have)) return false;
    return Object.entries(want).every(([k, v]) => contains((have as Record<string, unknown>)[k], v));
  }
  return have === want;
}

export class WaypointReconciler {
  /** For tests and metrics: passes run, objects written (created or patched), deleted, status writes. */
  readonly counters = { passes: 0, created: 0, patched: 0, deleted: 0, statuses: 0, errors: 0 };
  private readonly watch: ManagedWatch;
  private closed = false;
  private running?: Promise<void>;
  private again = false;
  private timer?: NodeJS.Timeout;
  private resync?: NodeJS.Timeout;
  private readonly rewatch = new Set<NodeJS.Timeout>();
  private idleWaiters: (() => void)[] = [];
  /** `namespace/name` of the ConfigMaps waypoint Gateways name as parameters, as of the last pass. */
  private parameters = new Set<string>();

  constructor(
    private readonly kc: KubeConfig,
    private readonly log: Logger,
    private readonly opts: WaypointReconcilerOptions,
  ) {
    this.watch = new ManagedWatch(kc);
  }

  /** Watches Gateways, Deployments, Services and ConfigMaps; each relevant change schedules a pass. Does not block. */
  start(): void {
    for (const kind of ['Gateway', 'Deployment', 'Service', 'ConfigMap'] as const) this.watchKind(kind);
    const resync = () => {
      this.resync = setTimeout(() => {
        this.schedule();
        resync();
      }, this.opts.resyncMs ?? 60_000);
      this.resync.unref?.();
    };
    resync();
    this.schedule();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.resync);
    for (const t of this.rewatch) clearTimeout(t);
    this.watch.close();
  }

  /** Resolves when no pass is running or scheduled (tests). */
  idle(): Promise<void> {
    if (!this.running && !this.timer) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Runs a pass now (or after the one running); resolves when it is done. */
  async reconcile(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.pass()
      .catch((e: unknown) => {
        this.counters.errors++;
        this.log.warn({ err: (e as Error).message }, 'waypoint reconcile failed; retrying');
        this.schedule(Math.max(1000, this.opts.debounceMs ?? 100));
      })
      .finally(() => {
        this.running = undefined;
        if (this.again && !this.closed) {
          this.again = false;
          void this.reconcile();
        } else if (!this.timer) for (const w of this.idleWaiters.splice(0)) w();
      });
    return this.running;
  }

  private schedule(delay = this.opts.debounceMs ?? 100): void {
    if (this.closed || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.reconcile();
    }, delay);
  }

  private watchKind(kind: Kind): void {
    if (this.closed) return;
    const again = () => {
      if (this.closed) return;
      const t = setTimeout(() => {
        this.rewatch.delete(t);
        this.watchKind(kind);
      }, this.opts.rewatchMs ?? 5000);
      this.rewatch.add(t);
    };
    // ConfigMaps carry no label of ours: every one is streamed (the control plane may read them all)
    // and only those a waypoint Gateway names schedule a pass; the others cost a set lookup.
    const relevant = (o: unknown) => {
      const m = (o as Live | undefined)?.metadata;
      if (kind === 'Gateway') return true;
      if (kind === 'ConfigMap') return !!m && this.parameters.has(`${m.namespace ?? 'default'}/${m.name}`);
      return !!m?.labels?.[GATEWAY_NAME_LABEL];
    };
    this.watch
      .watch(collection(kind), kind === 'Gateway' || kind === 'ConfigMap' ? {} : { labelSelector: GATEWAY_NAME_LABEL }, (_phase, obj) => relevant(obj) && this.schedule(), (err) => {
        if (err && !this.closed) this.log.debug({ kind, err: (err as Error).message }, 'waypoint watch ended');
        // A reopened watch starts with every object as ADDED: the pass it schedules catches up.
        again();
      })
      .catch((err: unknown) => {
        this.log.debug({ kind, err: (err as Error).message }, 'waypoint watch failed');
        again();
      });
  }

  private async list<T>(kind: Kind, labelSelector?: string): Promise<T[] | undefined> {
    try {
      const body = (await requestJson(this.kc, 'GET', collection(kind) + (labelSelector ? `?labelSelector=${encodeURIComponent(labelSelector)}` : ''))) as { items?: T[] };
      if (!Array.isArray(body.items)) throw new Error(`GET ${collection(kind)}: not a list`);
      return body.items;
    } catch (e) {
      if ((e as HttpError).statusCode === 404) return undefined; // not served (the Gateway API CRDs not installed)
      throw e;
    }
  }

  private async get(kind: Kind, ns: string, name: string): Promise<Live | undefined> {
    try {
      return (await requestJson(this.kc, 'GET', objectPath(kind, ns, name))) as Live;
    } catch (e) {
      if ((e as HttpError).statusCode === 404) return undefined;
      throw e;
    }
  }

  private async pass(): Promise<void> {
    this.counters.passes++;
    const gateways = await this.list<GatewayObject>('Gateway');
    if (!gateways) return; // no Gateway API: nothing can ask for a waypoint
    const waypoints = gateways.filter((g) => isWaypointGateway({ kind: 'Gateway', spec: g.spec }) && !g.metadata.deletionTimestamp);
    const owners = new Set(waypoints.map((g) => g.metadata.uid).filter((u): u is string => !!u));
    this.parameters = new Set(
      waypoints.flatMap((g) => {
        const name = (g.spec?.infrastructure?.parametersRef as { name?: unknown } | undefined)?.name;
        return typeof name === 'string' ? [`${g.metadata.namespace ?? 'default'}/${name}`] : [];
      }),
    );
    let failed = false;
    for (const gw of waypoints) {
      if (this.closed) return;
      try {
        await this.reconcileGateway(gw);
      } catch (e) {
        failed = true;
        this.counters.errors++;
        this.log.warn({ gateway: `${gw.metadata.namespace}/${gw.metadata.name}`, err: (e as Error).message }, 'waypoint not reconciled; retrying');
      }
    }
    await this.collect(owners);
    if (failed) this.schedule(Math.max(1000, this.opts.debounceMs ?? 100)); // one failing Gateway does not stop the others
  }

  private async reconcileGateway(gw: GatewayObject): Promise<void> {
    const ns = gw.metadata.namespace ?? 'default';
    // Read at gateway.networking.k8s.io/v1 (list items carry no apiVersion of their own).
    const checked = checkWaypoint({ ...gw, apiVersion: GATEWAY_API_VERSION, metadata: { ...gw.metadata, namespace: ns } });
    if ('problem' in checked) {
      // Nothing is created for a Gateway that is not accepted; what a previous valid version
      // created stays (the last good version stays in force, as for every configuration).
      return this.writeStatus(gw, { problem: checked.problem });
    }
    const ref = parametersConfigMap(checked.waypoint);
    const params = waypointParameters(checked.waypoint, ref === undefined ? undefined : ((await this.get('ConfigMap', ns, ref)) as { data?: unknown } | undefined));
    // Parameters missing or bad: not accepted (InvalidParameters); the last good objects stay.
    if ('problem' in params) return this.writeStatus(gw, { problem: params.problem });
    const r = renderWaypoint(checked.waypoint, this.opts, params.overlay);
    const wanted = [r.serviceAccount, r.service, r.deployment];
    // All three are checked before any is written: one a stranger holds stops the whole waypoint.
    const found = await Promise.all(wanted.map((w) => this.get(w.kind, w.metadata.namespace, w.metadata.name)));
    for (const [i, w] of wanted.entries()) {
      const conflict = this.stranger(w, found[i], gw);
      if (conflict) return this.writeStatus(gw, { readyReplicas: 0, conflict, ignored: checked.ignored });
    }
    const [, service, deployment] = await Promise.all(wanted.map((w, i) => this.ensure(w, found[i])));
    await this.writeStatus(gw, { readyReplicas: deployment?.status?.readyReplicas ?? 0, ignored: checked.ignored, address: service?.spec?.clusterIP && service.spec.clusterIP !== 'None' ? service.spec.clusterIP : undefined });
  }

  /**
   * Why an existing object may not be written, if it may not. Ours: owned by this Gateway, or by
   * an earlier Gateway of the same name (deleted and created again before the garbage collector
   * ran). A service account named by gateway.istio.io/service-account may be the user's own: it is
   * used as it is. Anything else belongs to someone else and is never taken over.
   */
  private stranger(want: RenderedObject, have: Live | undefined, gw: GatewayObject): string | undefined {
    if (!have || this.ours(have, gw)) return undefined;
    if (want.kind === 'ServiceAccount' && want.metadata.name !== gw.metadata.name) return undefined;
    return `${want.kind} ${want.metadata.namespace}/${want.metadata.name} exists and is not owned by this Gateway; it is left alone`;
  }

  private ours(have: Live, gw: GatewayObject): boolean {
    return !!have.metadata.ownerReferences?.some((o) => o.kind === 'Gateway' && (o.uid === gw.metadata.uid || o.name === gw.metadata.name)) && have.metadata.labels?.[GATEWAY_NAME_LABEL] === gw.metadata.name;
  }

  /** Creates the object, or brings ours to the rendering (a user's service account is left as it is). */
  private async ensure(want: RenderedObject, have: Live | undefined): Promise<Live> {
    const kind = want.kind;
    const { namespace: ns, name } = want.metadata;
    if (!have) {
      this.counters.created++;
      this.log.info({ kind, object: `${ns}/${name}` }, 'waypoint object created');
      return (await requestJson(this.kc, 'POST', inNamespace(kind, ns), want)) as Live;
    }
    if (contains(have, want) || !have.metadata.labels?.[GATEWAY_NAME_LABEL]) return have;
    this.counters.patched++;
    this.log.info({ kind, object: `${ns}/${name}` }, 'waypoint object updated');
    // A merge patch of what we render (the uid is a precondition): fields the server or others
    // add (a Service's clusterIP, defaults) stay; lists we render (ports, containers) are replaced.
    const patch = { metadata: { ...want.metadata, uid: have.metadata.uid }, ...(want.spec && { spec: want.spec }) };
    return (await requestJson(this.kc, 'PATCH', objectPath(kind, ns, name), patch)) as Live;
  }

  private async writeStatus(gw: GatewayObject, state: WaypointState): Promise<void> {
    const status = waypointStatus(gw, state);
    // Only what this controller writes is compared: others' status fields are not ours to fight over.
    if (contains(gw.status ?? {}, status)) return;
    this.counters.statuses++;
    const ns = gw.metadata.namespace ?? 'default';
    await requestJson(this.kc, 'PATCH', `${objectPath('Gateway', ns, gw.metadata.name)}/status`, { metadata: { uid: gw.metadata.uid }, status }).catch((e: HttpError) => {
      if (e.statusCode !== 404 && e.statusCode !== 409) throw e; // deleted or replaced meanwhile: the next pass sees it
    });
  }

  /** Deletes what a Gateway of class istio-waypoint that no longer exists left behind. */
  private async collect(owners: Set<string>): Promise<void> {
    for (const kind of ['Deployment', 'Service', 'ServiceAccount'] as const) {
      const items = (await this.list<Live>(kind, GATEWAY_NAME_LABEL)) ?? [];
      for (const o of items) {
        const refs = (o.metadata.ownerReferences ?? []).filter((r) => r.kind === 'Gateway');
        // Only what a waypoint Gateway owned: other Gateways' deployments (an ingress) are not ours.
        if (o.metadata.labels?.[GATEWAY_CLASS_LABEL] !== WAYPOINT_CLASS || refs.length === 0 || refs.some((r) => owners.has(r.uid))) continue;
        const ns = o.metadata.namespace ?? 'default';
        this.counters.deleted++;
        this.log.info({ kind, object: `${ns}/${o.metadata.name}` }, 'waypoint object deleted: its Gateway is gone');
        await requestJson(this.kc, 'DELETE', objectPath(kind, ns, o.metadata.name), { kind: 'DeleteOptions', apiVersion: 'v1', preconditions: { uid: o.metadata.uid }, propagationPolicy: 'Background' }).catch((e: HttpError) => {
          if (e.statusCode !== 404 && e.statusCode !== 409) throw e;
        });
      }
    }
  }
}
