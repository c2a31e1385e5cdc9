// The fuzzing harness: property-based runs with fast-check under a time budget, replaying a
// committed corpus first.
//
//   FUZZ_SECONDS  total budget across all fuzzers (default 60: the bounded run inside `make test`);
//                 each fuzzer gets its share (SHARES below).
//   FUZZ_SEED     replay one run: the seed printed at the start of every fuzzer, or the one in a
//                 failure's message (with FUZZ_PATH from the same message, it jumps to the shrunk
//                 counterexample).
//   FUZZ_SAVE=1   (make fuzz) write inputs that produced an outcome not seen before, and any
//                 counterexample, to test/fuzz/corpus/<fuzzer>/ so every later run replays them.
//
// fast-check is not coverage-guided; "interesting" here is what the property reports back as its
// outcome signature (a status, a gRPC code, an error class): a new signature is a new path
// through the parser worth keeping.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { repoRoot } from '../../src/util/paths.ts';

const SHARES = {
  authority: 0.05,
  'hbone-node': 0.2,
  'hbone-native': 0.2,
  ca: 0.15,
  xds: 0.2,
  config: 0.2,
} as const;
export type FuzzerName = keyof typeof SHARES;

export const totalSeconds = Number(process.env.FUZZ_SECONDS ?? 60);
const saving = process.env.FUZZ_SAVE === '1';
/** Keeps the committed corpus small: the first inputs that found each outcome, no more. */
const MAX_CORPUS = 40;
/** Nor big ones: an input whose outcome only a huge list finds is found again by the generators. */
const MAX_ENTRY = 32 * 1024;

export const corpusDir = (name: FuzzerName) => path.join(repoRoot, 'test', 'fuzz', 'corpus', name);

export function budgetMs(name: FuzzerName): number {
  return Math.max(1000, Math.round(totalSeconds * 1000 * SHARES[name]));
}

/** vitest's timeout for a fuzzer's test: its budget plus room for the corpus and one slow run. */
export function testTimeout(name: FuzzerName): number {
  return budgetMs(name) + 90_000;
}

// JSON with Buffers (and bigints) kept intact, so corpus files are readable and replay exactly.
function replacer(this: unknown, key: string, v: unknown): unknown {
  const raw = (this as Record<string, unknown>)[key];
  if (Buffer.isBuffer(raw) || raw instanceof Uint8Array) return { $b64: Buffer.from(raw).toString('base64') };
  if (typeof v === 'bigint') return { $big: v.toString() };
  return v;
}
function reviver(_k: string, v: unknown): unknown {
  if (v && typeof v === 'object' && '$b64' in v) return Buffer.from(String((v as { $b64: string }).$b64), 'base64');
  if (v && typeof v === 'object' && '$big' in v) return BigInt(String((v as { $big: string }).$big));
  return v;
}
export const encodeInput = (v: unknown) => JSON.stringify(v, replacer, 1);
export const decodeInput = <T>(s: string) => JSON.parse(s, reviver) as T;

export function loadCorpus<T>(name: FuzzerName): { file: string; input: T }[] {
  const dir = corpusDir(name);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => ({ file: path.join(dir, f), input: decodeInput<T>(fs.readFileSync(path.join(dir, f), 'utf8')) }));
}

function save(name: FuzzerName, input: unknown, prefix: string): string {
  const dir = corpusDir(name);
  fs.mkdirSync(dir, { recursive: true });
  const text = encodeInput(input);
  const file = path.join(dir, `${prefix}-${crypto.createHash('sha256').update(text).digest('hex').slice(0, 12)}.json`);
  fs.writeFileSync(file, text + '\n');
  return file;
}

export interface FuzzOptions {
  /** Bound on one run of the property (a hang is a failure). */
  runTimeoutMs?: number;
}

/**
 * Replays the corpus, then runs `property` on generated inputs until the fuzzer's budget is spent.
 * The property throws on a violation and returns an outcome signature otherwise.
 */
export async function fuzz<T>(
  name: FuzzerName,
  arb: fc.Arbitrary<T>,
  property: (input: T) => Promise<string> | string,
  opts: FuzzOptions = {},
): Promise<{ runs: number; signatures: Map<string, number> }> {
  const signatures = new Map<string, number>();
  const seen = new Set<string>();
  const started = Date.now();
  for (const { file, input } of loadCorpus<T>(name)) {
    try {
      seen.add(await property(input));
    } catch (e) {
      throw new Error(`fuzz ${name}: corpus input ${path.relative(repoRoot, file)} fails: ${(e as Error).message}`, { cause: e });
    }
  }
  let corpusSize = loadCorpus(name).length;
  const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : crypto.randomInt(2 ** 31);
  // The corpus replay counts against the budget (but never leaves less than a second to explore).
  const budget = Math.max(1000, budgetMs(name) - (Date.now() - started));
  // Printed up front so a crash that takes the process down (a native fault) can still be replayed.
  console.log(`fuzz ${name}: seed ${seed}, budget ${budget} ms (replay: FUZZ_SEED=${seed})`);
  let runs = 0;
  const details = await fc.check(
    fc.asyncProperty(arb, async (input) => {
      runs++;
      const sig = await property(input);
      signatures.set(sig, (signatures.get(sig) ?? 0) + 1);
      if (saving && !seen.has(sig) && corpusSize < MAX_CORPUS && encodeInput(input).length <= MAX_ENTRY) {
        save(name, input, 'new');
        corpusSize++;
      }
      seen.add(sig);
    }),
    {
      seed,
      path: process.env.FUZZ_PATH,
      numRuns: Number.MAX_SAFE_INTEGER,
      interruptAfterTimeLimit: budget,
      timeout: opts.runTimeoutMs ?? 15_000,
      endOnFailure: false,
    },
  );
  if (details.failed) {
    const where = saving && details.counterexample ? ` (saved as ${path.relative(repoRoot, save(name, details.counterexample[0], 'crash'))})` : '';
    const cause = details.errorInstance as Error | undefined;
    throw new Error(`fuzz ${name}: ${fc.defaultReportMessage(details)}${where}\nFailure: ${cause?.message ?? String(cause)}`, { cause });
  }
  console.log(
    `fuzz ${name}: ${runs} runs, ${signatures.size} outcomes, most common: ${[...signatures].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([s, n]) => `${s}×${n}`).join(', ')}`,
  );
  return { runs, signatures };
}
