// Where a proxy's telemetry finds the series an event counts into, without building and hashing
// its ~25 labels per event: by a key of the event's facts (the model objects' ids, identities,
// flags), checked against the very model objects the labels were computed from (a changed
// workload is a new object, so its new labels make or find their own series). Series with equal
// labels are one series however they were reached.
import type { Service, Workload } from '../api/mesh.ts';

type ModelFacts = { src?: Workload; dst?: Workload; service?: Service };

/** Facts cache bound: more distinct facts than this between clears only costs recomputing labels. */
const MAX_FACTS = 10_000;

/** The facts key's model part: the objects' identities, the rest is the caller's. */
export const modelKey = (f: ModelFacts & { reporter: string; srcPrincipal?: string; dstPrincipal?: string; mtls: boolean }) =>
  `${f.reporter}|${f.src?.uid ?? ''}|${f.dst?.uid ?? ''}|${f.service ? `${f.service.namespace}/${f.service.hostname}` : ''}|${f.srcPrincipal ?? ''}|${f.dstPrincipal ?? ''}|${f.mtls ? 1 : 0}`;

export class SeriesCache<L extends Record<string, string>, S> {
  /** label values joined -> series: what a scrape reads. */
  readonly byLabels = new Map<string, S>();
  private readonly byFacts = new Map<string, { f: ModelFacts; series: S }>();

  constructor(
    private readonly names: readonly (keyof L & string)[],
    private readonly make: (labels: L) => S,
  ) {}

  /** The series for facts under `key`; `labels` computes their labels on a miss. */
  get(key: string, f: ModelFacts, labels: () => L): S {
    const hit = this.byFacts.get(key);
    if (hit && hit.f.src === f.src && hit.f.dst === f.dst && hit.f.service === f.service) return hit.series;
    const l = labels();
    const lk = this.names.map((n) => l[n]).join('\0');
    let series = this.byLabels.get(lk);
    if (series === undefined) this.byLabels.set(lk, (series = this.make(l)));
    if (this.byFacts.size >= MAX_FACTS) this.byFacts.clear();
    this.byFacts.set(key, { f: { src: f.src, dst: f.dst, service: f.service }, series });
    return series;
  }

  clear(): void {
    this.byLabels.clear();
    this.byFacts.clear();
  }
}
