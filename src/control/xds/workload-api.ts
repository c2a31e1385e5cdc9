// The mesh model as workload-API resources: Address (workloads and services) and Authorization.
// Encodings are kept per model object, so a Workload the model builder reused is not encoded
// again, and the store sees the same bytes and does not hash them again.
import { encodeAuthorization, encodeService, encodeWorkload, TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../../api/codec.ts';
import { policyKey } from '../../api/mesh.ts';
import type { MeshModel } from '../model/mesh-model.ts';
import type { ResourceStore } from './resources.ts';

export class WorkloadApiPublisher {
  private readonly encoded = new WeakMap<object, Uint8Array>();

  constructor(private readonly store: ResourceStore) {}

  publish(model: MeshModel): void {
    const addresses = new Map<string, Uint8Array>();
    for (const w of model.workloads) addresses.set(w.uid, this.encode(w, encodeWorkload));
    for (const s of model.services) addresses.set(`${s.namespace}/${s.hostname}`, this.encode(s, encodeService));
    this.store.replace(TYPE_ADDRESS, addresses);
    this.store.replace(TYPE_AUTHORIZATION, new Map(model.policies.map((p) => [policyKey(p), this.encode(p, encodeAuthorization)])));
  }

  private encode<T extends object>(x: T, encode: (x: T) => Uint8Array): Uint8Array {
    let body = this.encoded.get(x);
    if (!body) this.encoded.set(x, (body = encode(x)));
    return body;
  }
}
