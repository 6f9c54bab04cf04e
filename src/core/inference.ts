import type { Span } from '@opentelemetry/api';
import { type CachedRow, createKeyer, type TieredCache, type TierName } from './cache.js';
import type { Predictor } from './predictor.js';
import type { ModelEntry } from './registry.js';
import { allocate, type DType, type Tensor } from './tensor.js';
import { startSpan, type TraceScope } from './tracing.js';

export interface InferResult {
  outputs: Record<string, Tensor>;
  /** Per row: the cache tier that answered it, or undefined when the model ran. */
  tiers: (TierName | undefined)[] | undefined;
}

interface Deferred {
  promise: Promise<CachedRow>;
  resolve: (r: CachedRow) => void;
  reject: (e: unknown) => void;
}

function deferred(): Deferred {
  let resolve!: (r: CachedRow) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<CachedRow>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // its waiters see the error; an unwatched one must not crash the process
  return { promise, resolve, reject };
}

function pickRows(
  inputs: Record<string, Tensor>,
  rows: number,
  pick: readonly number[],
): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(inputs)) {
    const per = t.data.length / rows;
    const data = allocate(t.type, pick.length * per);
    pick.forEach((r, j) => {
      (data as Float32Array).set((t.data as Float32Array).subarray(r * per, (r + 1) * per), j * per);
    });
    out[name] = { type: t.type, dims: [pick.length, ...t.dims.slice(1)], data };
  }
  return out;
}

function toCachedRows(outputs: Record<string, Tensor>, names: readonly string[], rows: number): CachedRow[] {
  const result: CachedRow[] = new Array(rows);
  for (let r = 0; r < rows; r++) {
    const row: CachedRow = {};
    for (const name of names) {
      const t = outputs[name]!;
      const per = t.data.length / rows;
      row[name] =
        t.type === 'int64'
          ? Array.from((t.data as BigInt64Array).subarray(r * per, (r + 1) * per), Number)
          : Array.from((t.data as Float32Array).subarray(r * per, (r + 1) * per));
    }
    result[r] = row;
  }
  return result;
}

/** Per output asked for: values per row where the signature fixes it, and whether they must be integers. */
function expectedRows(entry: ModelEntry, names: readonly string[]) {
  return names.map((name) => {
    const info = entry.signature.outputs.find((o) => o.name === name);
    const inner = info?.shape.slice(1) ?? [];
    return {
      length: inner.every((d) => typeof d === 'number')
        ? (inner as number[]).reduce((x, y) => x * y, 1)
        : undefined,
      integer: info?.type !== 'float32' && info?.type !== 'float64',
    };
  });
}

/** A cached row read from a shared tier holds every output asked for, as numbers of the right count and kind. */
function rowFits(
  row: unknown,
  names: readonly string[],
  expected: ReturnType<typeof expectedRows>,
): row is CachedRow {
  if (row === null || typeof row !== 'object') return false;
  for (let n = 0; n < names.length; n++) {
    const values = (row as Record<string, unknown>)[names[n]!];
    if (!Array.isArray(values) || values.length === 0) return false;
    const { length, integer } = expected[n]!;
    if (length !== undefined && values.length !== length) return false;
    for (const v of values) {
      if (typeof v !== 'number' || !(integer ? Number.isSafeInteger(v) : Number.isFinite(v))) return false;
    }
  }
  return true;
}

function fromCachedRows(
  entry: ModelEntry,
  names: readonly string[],
  rows: readonly CachedRow[],
): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const name of names) {
    const info = entry.signature.outputs.find((o) => o.name === name)!;
    const type = info.type as DType;
    const per = rows[0]![name]!.length;
    const inner = info.shape.slice(1).every((d) => typeof d === 'number')
      ? (info.shape.slice(1) as number[])
      : [per];
    const data = allocate(type, rows.length * per);
    rows.forEach((row, r) => {
      const values = row[name]!;
      if (type === 'int64')
        for (let k = 0; k < per; k++) (data as BigInt64Array)[r * per + k] = BigInt(values[k]!);
      else (data as Float32Array).set(values, r * per);
    });
    out[name] = { type, dims: [rows.length, ...inner], data };
  }
  return out;
}

/** The cache lookup's span ends with what each tier answered. */
function endLookup(span: Span, tiers: readonly (TierName | undefined)[], waiting: number) {
  let l1 = 0;
  let l2 = 0;
  for (const t of tiers) {
    if (t === 'l1') l1++;
    else if (t === 'l2') l2++;
  }
  span.setAttributes({
    'onnxserve.cache.l1_hits': l1,
    'onnxserve.cache.l2_hits': l2,
    // Rows another request was already computing: this one waits for its answer.
    'onnxserve.cache.shared': waiting,
    'onnxserve.cache.misses': tiers.length - l1 - l2 - waiting,
  });
  span.end();
}

/**
 * Inference with the cache in front: rows found in a tier skip the model; concurrent identical misses (in
 * one request or across requests) share one inference; what the model computes is stored in both tiers.
 */
export function createInference(
  predictor: Predictor,
  cache: TieredCache | undefined,
  opts: { singleFlight?: boolean } = {},
) {
  const singleFlight = opts.singleFlight !== false;
  const keyers = new Map<string, ReturnType<typeof createKeyer>>();
  const inflight = new Map<string, Promise<CachedRow>>();

  return {
    async run(
      entry: ModelEntry,
      inputs: Record<string, Tensor>,
      rows: number,
      opts: { useCache: boolean; outputs: readonly string[]; deadline?: number; trace?: TraceScope },
    ): Promise<InferResult> {
      if (!cache || !opts.useCache || !entry.batchable || !entry.fixedRowShape) {
        return {
          outputs: await predictor.infer(entry, inputs, rows, opts.deadline, opts.trace),
          tiers: undefined,
        };
      }
      // One keyer per model and set of outputs (sorted, without repeats): a client's ordering or repeats of
      // output names must not grow this map. The outputs usually arrive in that form already (/predict's
      // always do), so the set is only built when the plain lookup misses.
      let keyer = keyers.get(`${entry.id}\0${opts.outputs.join(',')}`);
      if (!keyer) {
        const outputSet = [...new Set(opts.outputs)].sort();
        const keyerId = `${entry.id}\0${outputSet.join(',')}`;
        keyer = keyers.get(keyerId);
        if (!keyer) {
          keyer = createKeyer(
            entry,
            entry.signature.inputs.map((i) => i.name),
            outputSet,
          );
          keyers.set(keyerId, keyer);
        }
      }
      const lookup = opts.trace
        ? startSpan(opts.trace, 'cache.lookup', { 'onnxserve.rows': rows })
        : undefined;
      const keys = keyer(inputs, rows);
      const results = cache.local(keys);
      const tiers: (TierName | undefined)[] = results.map((r) => (r ? 'l1' : undefined));

      // Claim every missing row before any await: a request that misses L1 while another computes (or looks
      // up) the same row waits for that one, whatever the tiers answer in between.
      const claimed: number[] = [];
      const own: Deferred[] = [];
      const waits: [number, Promise<CachedRow>][] = [];
      for (let i = 0; i < rows; i++) {
        if (results[i]) continue;
        const pending = singleFlight ? inflight.get(keys[i]!) : undefined;
        if (pending) {
          waits.push([i, pending]);
          continue;
        }
        const d = deferred();
        if (singleFlight) inflight.set(keys[i]!, d.promise);
        claimed.push(i);
        own.push(d);
      }

      const run: number[] = [];
      const runDeferreds: Deferred[] = [];
      try {
        const remote = await cache.remote(claimed.map((i) => keys[i]!));
        const expected = expectedRows(entry, opts.outputs);
        claimed.forEach((i, j) => {
          const row = remote[j];
          // A shared tier's value is checked before use: another version of this server, a bug or a person
          // may have written anything there. A row that does not fit is a miss, and the model runs.
          if (row && rowFits(row, opts.outputs, expected)) {
            results[i] = row;
            tiers[i] = 'l2';
            own[j]!.resolve(row);
          } else {
            run.push(i);
            runDeferreds.push(own[j]!);
          }
        });
      } catch (err) {
        for (const d of own) d.reject(err);
        for (const i of claimed) inflight.delete(keys[i]!);
        lookup?.end();
        throw err;
      }
      if (lookup) endLookup(lookup, tiers, waits.length);
      const found = { tiers };
      /** Run the model on these rows (all of them: the request's own tensors) under this request's deadline. */
      const compute = async (pick: number[]) => {
        const all = pick.length === rows;
        const outputs = await predictor.infer(
          entry,
          all ? inputs : pickRows(inputs, rows, pick),
          pick.length,
          opts.deadline,
          opts.trace,
        );
        return { outputs, computed: toCachedRows(outputs, opts.outputs, pick.length) };
      };

      if (run.length > 0) {
        const allRun = run.length === rows;
        try {
          const { outputs, computed } = await compute(run);
          const store: [string, CachedRow][] = [];
          run.forEach((i, j) => {
            results[i] = computed[j]!;
            runDeferreds[j]!.resolve(computed[j]!);
            store.push([keys[i]!, computed[j]!]);
          });
          cache.set(store);
          if (allRun) {
            const selected: Record<string, Tensor> = {};
            for (const name of opts.outputs) selected[name] = outputs[name]!;
            return { outputs: selected, tiers: found.tiers };
          }
        } catch (err) {
          for (const d of runDeferreds) d.reject(err);
          throw err;
        } finally {
          for (const i of claimed) inflight.delete(keys[i]!);
        }
      } else {
        for (const i of claimed) inflight.delete(keys[i]!);
      }
      // Rows borrowed from another request's computation: if it failed for reasons of its own (its client's
      // short deadline, its client gone), this request computes them itself, under its own deadline.
      const retry: number[] = [];
      await Promise.all(
        waits.map(async ([i, p]) => {
          try {
            results[i] = await p;
          } catch {
            retry.push(i);
          }
        }),
      );
      if (retry.length > 0) {
        retry.sort((a, b) => a - b);
        const { computed } = await compute(retry);
        retry.forEach((i, j) => {
          results[i] = computed[j]!;
        });
      }
      return { outputs: fromCachedRows(entry, opts.outputs, results as CachedRow[]), tiers: found.tiers };
    },
  };
}

export type Inference = ReturnType<typeof createInference>;
