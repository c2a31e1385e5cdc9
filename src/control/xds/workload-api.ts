// The mesh model as workload-API resources: Address (workloads and services) and Authorization.
// Encodings are kept per model object and each namespace's resources per namespace model, so a
// build publishes only the namespaces that changed, and in them encodes only new objects.
import { encodeAuthorization, encodeService, encodeWorkload, TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../../api/codec.ts';
import { policyKey } from '../../api/mesh.ts';
import type { MeshModel, NsModel } from '../model/mesh-model.ts';
import { GroupedResources, type Bodies } from './grouped.ts';
import type { ResourceStore } from './resources.ts';

export class WorkloadApiPublisher {
  private readonly encoded = new WeakMap<object, Uint8Array>();
  private readonly addresses = new WeakMap<NsModel, Bodies>();
  private readonly policies = new WeakMap<NsModel, Bodies>();
  private readonly addressType: GroupedResources;
  private readonly authorizationType: GroupedResources;

  constructor(store: ResourceStore) {
    this.addressType = new GroupedResources(store, TYPE_ADDRESS);
    this.authorizationType = new GroupedResources(store, TYPE_AUTHORIZATION);
  }

  publish(model: MeshModel): void {
    const addresses = new Map<string, Bodies>();
    const policies = new Map<string, Bodies>();
    for (const [ns, m] of model.namespaces) {
      let a = this.addresses.get(m);
      if (!a) {
        const bodies = new Map<string, Uint8Array>();
        for (const w of m.workloads) bodies.set(w.uid, this.encode(w, encodeWorkload));
        for (const s of m.services) bodies.set(`${s.namespace}/${s.hostname}`, this.encode(s, encodeService));
        this.addresses.set(m, (a = bodies));
      }
      addresses.set(ns, a);
      let p = this.policies.get(m);
      if (!p) this.policies.set(m, (p = new Map(m.policies.map((x) => [policyKey(x), this.encode(x, encodeAuthorization)]))));
      policies.set(ns, p);
    }
    this.addressType.publish(addresses);
    this.authorizationType.publish(policies);
  }

  private encode<T extends object>(x: T, encode: (x: T) => Uint8Array): Uint8Array {
    let body = this.encoded.get(x);
    if (!body) this.encoded.set(x, (body = encode(x)));
    return body;
  }
}
