/**
 * Drift detection. Per model version, the distribution of each input feature and of the predictions over a
 * sliding window of recent rows is compared with a reference: the training data's (the trainer writes it into
 * model.json as `drift_reference`), one uploaded through the admin API, or one captured from the version's
 * first rows of traffic. Two statistics per series: the population stability index (PSI) over the
 * reference's quantile bins, and the Kolmogorov–Smirnov statistic between the two cumulative distributions
 * at the bins' cut points (the grouped-data KS: never more than the exact one), with its p-value.
 *
 * The counting happens where the model runs (a worker thread on Node, see `RunOptions.histogram` and
 * `histogramBatch`): the main thread only adds each batch's counts (a few hundred numbers) into the window,
 * and computes the statistics when they are read (a scrape, a request to the drift route).
 */
import type { BatchReport } from './batcher.js';
import { ServeError } from './errors.js';
import type { ModelEntry } from './registry.js';
import type { Tensor } from './tensor.js';

/** One variable's distribution, binned: bin i holds the values v with cuts[i-1] < v <= cuts[i]. */
export interface BinnedDistribution {
  /** Cut points, ascending; the first bin is open below and the last open above. */
  cuts: number[];
  /** Each bin's share (cuts.length + 1 of them, summing to 1). */
  proportions: number[];
  mean: number;
  std: number;
}

export interface DriftReference {
  /** Where it came from: the trainer's data, an upload, or the version's first rows of traffic. */
  source: 'training' | 'uploaded' | 'captured';
  /** Rows it was built from (the KS p-value counts them). */
  rows: number;
  /** One per input column, in the model's order. */
  features: ({ name: string } & BinnedDistribution)[];
  /**
   * The model's score: the positive class's probability (two classes), the predicted class's probability
   * (more), or the predicted value (regression).
   */
  prediction?: BinnedDistribution;
  /** The share of rows predicted as each class, by class index. */
  classes?: number[];
}

/** Quantile bins per reference variable (deciles, as PSI is conventionally read). */
export const REFERENCE_BINS = 10;

/** How a model's output becomes the prediction series: see DriftReference.prediction. */
export interface ScoreSpec {
  output: string;
  kind: 'probabilities' | 'value';
  /** Classes in the probabilities output (0 for a value). */
  classes: number;
}

/**
 * What the thread that runs a batch counts: every series' cut points (the features' in column order, then
 * the score's), one after another. Plain typed arrays, so it crosses to a worker thread cheaply.
 */
export interface HistogramSpec {
  input: string;
  features: number;
  cuts: Float64Array;
  /** Where each series' cuts start in `cuts`, and where the last ends: series + 1 entries. */
  offsets: Int32Array;
  score?: ScoreSpec;
}

/**
 * A batch's counts, one Float64Array: every series' bin counts (series s at `offsets[s] + s`), then per series
 * its count, sum and sum of squares, then the predicted classes' counts.
 */
function layoutOf(spec: HistogramSpec) {
  const series = spec.offsets.length - 1;
  const stats = spec.offsets[series]! + series;
  const classes = stats + 3 * series;
  const length = classes + (spec.score?.kind === 'probabilities' ? spec.score.classes : 0);
  return { series, stats, classes, length };
}

/** Adds v to series s: its bin (binary search over its cuts) and its count, sum and sum of squares. */
function count(out: Float64Array, spec: HistogramSpec, stats: number, s: number, v: number): void {
  if (!Number.isFinite(v)) return;
  const { cuts, offsets } = spec;
  let lo = offsets[s]!;
  let hi = offsets[s + 1]!;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cuts[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  out[lo + s]!++;
  const at = stats + 3 * s;
  out[at]!++;
  out[at + 1]! += v;
  out[at + 2]! += v * v;
}

/** The index of the largest of `n` values from `offset`. */
function argmax(p: ArrayLike<number>, offset: number, n: number): number {
  let best = 0;
  for (let c = 1; c < n; c++) if (p[offset + c]! > p[offset + best]!) best = c;
  return best;
}

/** A probabilities row's score: the positive class's (two classes), else the predicted class's. */
export const scoreOfProbabilities = (p: ArrayLike<number>, offset: number, classes: number) =>
  classes === 2 ? p[offset + 1]! : p[offset + argmax(p, offset, classes)]!;

/** Count one batch's rows (its inputs, and the outputs the model gave them) into the spec's bins. */
export function histogramBatch(
  spec: HistogramSpec,
  inputs: Record<string, Tensor>,
  outputs: Record<string, Tensor>,
): Float64Array {
  const { stats, classes, length } = layoutOf(spec);
  const out = new Float64Array(length);
  const x = inputs[spec.input];
  if (!x) return out;
  const rows = x.dims[0] ?? 0;
  const f = spec.features;
  const data = x.data;
  const big = data instanceof BigInt64Array;
  for (let r = 0; r < rows; r++) {
    const at = r * f;
    for (let s = 0; s < f; s++)
      count(out, spec, stats, s, big ? Number(data[at + s]) : (data[at + s] as number));
  }
  const score = spec.score;
  const y = score ? outputs[score.output] : undefined;
  if (score && y && y.type !== 'int64' && y.data.length > 0) {
    const p = y.data as Float32Array;
    if (score.kind === 'probabilities') {
      const c = score.classes;
      if (p.length !== rows * c) return out;
      for (let r = 0; r < rows; r++) {
        const cls = argmax(p, r * c, c);
        count(out, spec, stats, f, c === 2 ? p[r * c + 1]! : p[r * c + cls]!);
        out[classes + cls]!++;
      }
    } else {
      const per = p.length / rows;
      for (let r = 0; r < rows; r++) count(out, spec, stats, f, p[r * per]!);
    }
  }
  return out;
}

/** The output a version's prediction series is read from, if any. */
export function scoreSpec(entry: ModelEntry): ScoreSpec | undefined {
  const outputs = entry.signature.outputs;
  if (entry.probabilityOutput) {
    const info = outputs.find((o) => o.name === entry.probabilityOutput);
    const classes = info?.shape[1];
    if (typeof classes === 'number' && classes > 1) {
      return { output: entry.probabilityOutput, kind: 'probabilities', classes };
    }
  }
  const value = outputs.find((o) => o.name === entry.predictionOutput);
  if (value && (value.type === 'float32' || value.type === 'float64')) {
    return { output: value.name, kind: 'value', classes: 0 };
  }
  return undefined;
}

/** Cut points at the `bins` quantiles of sorted values (repeats merged: a discrete variable gets its values). */
function quantileCuts(sorted: Float64Array, bins: number): number[] {
  const cuts: number[] = [];
  const n = sorted.length;
  for (let k = 1; k < bins; k++) {
    const v = sorted[Math.max(0, Math.ceil((k * n) / bins) - 1)]!;
    if (cuts.length === 0 || v > cuts[cuts.length - 1]!) cuts.push(v);
  }
  return cuts;
}

const binOf = (cuts: readonly number[], v: number) => {
  let lo = 0;
  let hi = cuts.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cuts[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
};

const round = (x: number, digits = 6) => {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
};

/** One variable's reference distribution from its values (finite ones; at least one). */
export function binnedDistribution(values: ArrayLike<number>, bins = REFERENCE_BINS): BinnedDistribution {
  const finite = Float64Array.from(values).filter(Number.isFinite);
  if (finite.length === 0) throw new Error('no finite value to build a distribution from');
  finite.sort();
  const cuts = quantileCuts(finite, bins);
  const counts = new Array<number>(cuts.length + 1).fill(0);
  let sum = 0;
  let squares = 0;
  for (const v of finite) {
    counts[binOf(cuts, v)]!++;
    sum += v;
    squares += v * v;
  }
  const mean = sum / finite.length;
  return {
    cuts,
    proportions: counts.map((c) => round(c / finite.length)),
    mean: round(mean),
    std: round(Math.sqrt(Math.max(0, squares / finite.length - mean * mean))),
  };
}

/** A reference from rows of features and (where the model has them) the predictions it gave them. */
export function buildReference(args: {
  source: DriftReference['source'];
  featureNames: readonly string[];
  /** Feature values by column. */
  columns: readonly ArrayLike<number>[];
  scores?: ArrayLike<number>;
  /** Predicted class per row, and how many classes there are. */
  classes?: { values: ArrayLike<number>; count: number };
  bins?: number;
}): DriftReference {
  const rows = args.columns[0]?.length ?? 0;
  const reference: DriftReference = {
    source: args.source,
    rows,
    features: args.columns.map((col, i) => ({
      name: args.featureNames[i]!,
      ...binnedDistribution(col, args.bins),
    })),
  };
  if (args.scores && args.scores.length > 0)
    reference.prediction = binnedDistribution(args.scores, args.bins);
  if (args.classes && args.classes.values.length > 0) {
    const counts = new Array<number>(args.classes.count).fill(0);
    for (let i = 0; i < args.classes.values.length; i++) counts[args.classes.values[i]!]!++;
    reference.classes = counts.map((c) => round(c / args.classes!.values.length));
  }
  return reference;
}

/** The share floor for empty bins in PSI (an empty bin would otherwise make it infinite). */
const EPSILON = 1e-4;

/** Population stability index: Σ (a − e) · ln(a / e) over the bins. */
export function psi(expected: readonly number[], counts: ArrayLike<number>, n: number): number {
  let sum = 0;
  for (let i = 0; i < expected.length; i++) {
    const e = Math.max(expected[i]!, EPSILON);
    const a = Math.max(counts[i]! / n, EPSILON);
    sum += (a - e) * Math.log(a / e);
  }
  return sum;
}

/** The largest gap between the two cumulative distributions at the cut points. */
export function ks(expected: readonly number[], counts: ArrayLike<number>, n: number): number {
  let ce = 0;
  let ca = 0;
  let d = 0;
  for (let i = 0; i < expected.length - 1; i++) {
    ce += expected[i]!;
    ca += counts[i]! / n;
    d = Math.max(d, Math.abs(ce - ca));
  }
  return d;
}

/**
 * The probability of a KS statistic at least `d` between samples of `n` and `m` rows drawn from one
 * distribution (m = 0: against a distribution known exactly), by Stephens' approximation of Kolmogorov's
 * distribution. For grouped data it is conservative: a shift it calls significant is one.
 */
export function ksPValue(d: number, n: number, m: number): number {
  if (n <= 0 || d <= 0) return 1;
  const ne = m > 0 ? (n * m) / (n + m) : n;
  const root = Math.sqrt(ne);
  const lambda = (root + 0.12 + 0.11 / root) * d;
  if (lambda < 0.2) return 1;
  let q = 0;
  for (let k = 1; k <= 100; k++) {
    const term = Math.exp(-2 * k * k * lambda * lambda);
    q += (k % 2 === 1 ? 2 : -2) * term;
    if (term < 1e-12) break;
  }
  return Math.min(1, Math.max(0, q));
}

// --- references as model.json and the admin API carry them ---------------------------------------------

const bad = (field: string, message: string) => new ServeError('ERR_VALIDATION', message, { field });

function parseDistribution(raw: unknown, field: string): BinnedDistribution {
  if (raw === null || typeof raw !== 'object') throw bad(field, `${field} must be an object`);
  const o = raw as Record<string, unknown>;
  const { cuts, proportions } = o;
  if (!Array.isArray(cuts) || cuts.length > 1000 || !cuts.every((c) => Number.isFinite(c))) {
    throw bad(`${field}.cuts`, `${field}.cuts must be an array of at most 1000 finite numbers`);
  }
  for (let i = 1; i < cuts.length; i++) {
    if (!(cuts[i] > cuts[i - 1])) throw bad(`${field}.cuts`, `${field}.cuts must be strictly ascending`);
  }
  if (
    !Array.isArray(proportions) ||
    proportions.length !== cuts.length + 1 ||
    !proportions.every((p) => Number.isFinite(p) && p >= 0)
  ) {
    throw bad(
      `${field}.proportions`,
      `${field}.proportions must be ${cuts.length + 1} shares (one more than the cuts), each 0 or more`,
    );
  }
  const total = (proportions as number[]).reduce((a, b) => a + b, 0);
  if (Math.abs(total - 1) > 0.01) {
    throw bad(`${field}.proportions`, `${field}.proportions must sum to 1 (they sum to ${round(total)})`);
  }
  const number = (k: string) => {
    const v = o[k];
    if (v === undefined || v === null) return Number.NaN;
    if (!Number.isFinite(v)) throw bad(`${field}.${k}`, `${field}.${k} must be a finite number`);
    return v as number;
  };
  return {
    cuts: cuts as number[],
    proportions: (proportions as number[]).map((p) => p / total),
    mean: number('mean'),
    std: number('std'),
  };
}

/**
 * A reference for this version, checked against it: one feature per input column (named as the model names
 * them), bins that add up, and classes as many as the model gives. Throws 422 naming the field.
 */
export function parseReference(
  entry: ModelEntry,
  raw: unknown,
  field = 'reference',
  source?: DriftReference['source'],
): DriftReference {
  const tabular = entry.tabular;
  if (!tabular) {
    throw bad(
      'model',
      `model ${entry.name} does not take rows of features: drift is measured on tabular models`,
    );
  }
  if (raw === null || typeof raw !== 'object') throw bad(field, `${field} must be an object`);
  const o = raw as Record<string, unknown>;
  if (!Array.isArray(o.features) || o.features.length !== tabular.features) {
    throw bad(`${field}.features`, `${field}.features must list the model's ${tabular.features} features`);
  }
  const features = o.features.map((f, i) => {
    const at = `${field}.features[${i}]`;
    const d = parseDistribution(f, at);
    const name = (f as Record<string, unknown>).name;
    const expected = tabular.featureNames?.[i] ?? String(i);
    if (name !== undefined && name !== expected) {
      throw bad(`${at}.name`, `${at}.name is '${String(name)}'; the model's feature ${i} is '${expected}'`);
    }
    return { name: expected, ...d };
  });
  const reference: DriftReference = {
    source: source ?? (o.source === 'captured' || o.source === 'uploaded' ? o.source : 'training'),
    rows: Number.isSafeInteger(o.rows) && (o.rows as number) > 0 ? (o.rows as number) : 0,
    features,
  };
  const score = scoreSpec(entry);
  if (o.prediction !== undefined && o.prediction !== null && score) {
    reference.prediction = parseDistribution(o.prediction, `${field}.prediction`);
  }
  if (o.classes !== undefined && o.classes !== null && score?.kind === 'probabilities') {
    const c = o.classes;
    if (!Array.isArray(c) || c.length !== score.classes || !c.every((p) => Number.isFinite(p) && p >= 0)) {
      throw bad(`${field}.classes`, `${field}.classes must be ${score.classes} shares, one per class`);
    }
    const total = (c as number[]).reduce((a, b) => a + b, 0);
    if (Math.abs(total - 1) > 0.01) throw bad(`${field}.classes`, `${field}.classes must sum to 1`);
    reference.classes = (c as number[]).map((p) => p / total);
  }
  return reference;
}

/** The histogram spec that counts rows against this reference. */
export function histogramSpec(entry: ModelEntry, reference: DriftReference): HistogramSpec {
  const score = reference.prediction ? scoreSpec(entry) : undefined;
  const series = [...reference.features.map((f) => f.cuts), ...(score ? [reference.prediction!.cuts] : [])];
  const offsets = new Int32Array(series.length + 1);
  for (let s = 0; s < series.length; s++) offsets[s + 1] = offsets[s]! + series[s]!.length;
  const cuts = new Float64Array(offsets[series.length]!);
  for (let s = 0; s < series.length; s++) cuts.set(series[s]!, offsets[s]!);
  return { input: entry.tabular!.input, features: reference.features.length, cuts, offsets, score };
}

// --- the monitor: windows per version, and their statistics ---------------------------------------------

export interface DriftOptions {
  /** Rows in the sliding window (the statistics cover about the last this many rows). */
  windowRows: number;
  /** Fewer rows than this in the window: no statistics yet (too few to tell drift from chance). */
  minRows: number;
  /** PSI above this marks a series as drifted (the alert rules' threshold). */
  psiThreshold: number;
  /** Share of batches counted (1 = every one). */
  sample?: number;
  /** A version with no reference captures one from its first this many rows; 0 = never. */
  captureRows?: number;
  /** Keeps a reference set through the API or captured (model.json on Node); resolves to where it went. */
  persist?: (entry: ModelEntry, reference: DriftReference) => Promise<boolean>;
  random?: () => number;
}

/** The window is this many segments: the oldest leaves as a new one fills. */
const SEGMENTS = 10;

interface Segment {
  counts: Float64Array;
  rows: number;
}

interface Capture {
  target: number;
  rows: number;
  columns: number[][];
  scores: number[];
  classes: number[];
}

interface VersionState {
  entry: ModelEntry;
  /** model.json's drift_reference as last read (JSON), to notice when the file changes it. */
  metaText: string | undefined;
  reference: DriftReference | undefined;
  /** Why there is no reference, when it is malformed in model.json. */
  problem: string | undefined;
  spec: HistogramSpec | undefined;
  layout: ReturnType<typeof layoutOf> | undefined;
  segments: Segment[];
  window: Float64Array | undefined;
  windowRows: number;
  rowsSeen: number;
  capture: Capture | undefined;
  /** Forgotten (its version was no longer loaded at a snapshot): entries still pointing here look again. */
  dropped: boolean;
}

export interface DriftSeriesStats {
  psi: number;
  ks: number;
  ks_p_value: number;
  mean: number | null;
  std: number | null;
  reference_mean: number | null;
  reference_std: number | null;
  drifted: boolean;
}

export interface DriftReport {
  model: string;
  version: string;
  /** no_reference: none yet (capturing, or none to capture); collecting: fewer than min rows in the window. */
  status: 'ok' | 'drift' | 'collecting' | 'no_reference' | 'unsupported';
  reference: { source: DriftReference['source']; rows: number } | null;
  /** Why no reference (a malformed one in model.json, a model that is not tabular). */
  problem: string | null;
  capturing: { rows: number; target: number } | null;
  window: { rows: number; target_rows: number; min_rows: number; rows_seen: number };
  psi_threshold: number;
  features: ({ name: string } & DriftSeriesStats)[];
  prediction: DriftSeriesStats | null;
  classes: { psi: number; proportions: number[]; reference_proportions: number[]; drifted: boolean } | null;
  drifted_features: string[];
}

export type DriftMonitor = ReturnType<typeof createDriftMonitor>;

export function createDriftMonitor(opts: DriftOptions) {
  const sample = opts.sample ?? 1;
  const random = opts.random ?? Math.random;
  const segmentRows = Math.max(1, Math.ceil(opts.windowRows / SEGMENTS));
  const states = new Map<string, VersionState>();
  const byEntry = new WeakMap<ModelEntry, VersionState>();
  const keyOf = (e: ModelEntry) => `${e.id}\0${e.sha256}`;

  const useReference = (s: VersionState, reference: DriftReference | undefined) => {
    s.reference = reference;
    s.spec = reference ? histogramSpec(s.entry, reference) : undefined;
    s.layout = s.spec ? layoutOf(s.spec) : undefined;
    s.segments = [];
    s.window = s.layout ? new Float64Array(s.layout.length) : undefined;
    s.windowRows = 0;
    s.capture =
      !reference && s.entry.tabular && (opts.captureRows ?? 0) > 0 && !s.problem
        ? newCapture(s.entry, opts.captureRows!)
        : undefined;
  };
  const newCapture = (entry: ModelEntry, target: number): Capture => ({
    target,
    rows: 0,
    columns: Array.from({ length: entry.tabular!.features }, () => []),
    scores: [],
    classes: [],
  });
  /** model.json's reference: adopted when the file's changes (or first read). */
  const readMetadata = (s: VersionState) => {
    const raw = s.entry.metadata.drift_reference;
    s.problem = s.entry.tabular ? undefined : 'the model does not take rows of features';
    let reference: DriftReference | undefined;
    if (raw !== undefined && s.entry.tabular) {
      try {
        reference = parseReference(s.entry, raw, 'drift_reference');
      } catch (err) {
        s.problem = `model.json's drift_reference: ${(err as Error).message}`;
      }
    }
    useReference(s, reference);
  };
  const stateOf = (entry: ModelEntry): VersionState => {
    let s = byEntry.get(entry);
    if (s && !s.dropped) return s;
    const key = keyOf(entry);
    s = states.get(key);
    const metaText =
      entry.metadata.drift_reference === undefined
        ? undefined
        : JSON.stringify(entry.metadata.drift_reference);
    if (!s) {
      s = {
        entry,
        metaText,
        reference: undefined,
        problem: undefined,
        spec: undefined,
        layout: undefined,
        segments: [],
        window: undefined,
        windowRows: 0,
        rowsSeen: 0,
        capture: undefined,
        dropped: false,
      };
      states.set(key, s);
      readMetadata(s);
    } else {
      // The same file with metadata read again: a reference set here stands unless model.json changed it.
      s.entry = entry;
      if (metaText !== s.metaText) {
        s.metaText = metaText;
        readMetadata(s);
      }
    }
    byEntry.set(entry, s);
    return s;
  };

  const add = (s: VersionState, counts: Float64Array) => {
    const window = s.window!;
    if (counts.length !== window.length) return;
    const rows = counts[s.layout!.stats]!;
    let current = s.segments[s.segments.length - 1];
    if (!current || current.rows >= segmentRows) {
      current = { counts: new Float64Array(window.length), rows: 0 };
      s.segments.push(current);
    }
    for (let i = 0; i < counts.length; i++) {
      current.counts[i]! += counts[i]!;
      window[i]! += counts[i]!;
    }
    current.rows += rows;
    s.windowRows += rows;
    s.rowsSeen += rows;
    // Old segments leave while the rest still fill the window.
    while (s.segments.length > 1 && s.windowRows - s.segments[0]!.rows >= opts.windowRows) {
      const old = s.segments.shift()!;
      for (let i = 0; i < old.counts.length; i++) window[i]! -= old.counts[i]!;
      s.windowRows -= old.rows;
    }
  };

  const setReference = async (s: VersionState, reference: DriftReference): Promise<boolean> => {
    useReference(s, reference);
    if (!opts.persist) return false;
    try {
      return await opts.persist(s.entry, reference);
    } catch {
      return false;
    }
  };

  const seriesStats = (
    s: VersionState,
    series: number,
    reference: BinnedDistribution,
    referenceRows: number,
  ): DriftSeriesStats => {
    const { spec, layout, window } = s;
    const from = spec!.offsets[series]! + series;
    const counts = window!.subarray(from, from + reference.proportions.length);
    const at = layout!.stats + 3 * series;
    const n = window![at]!;
    const mean = n > 0 ? window![at + 1]! / n : Number.NaN;
    const variance = n > 0 ? window![at + 2]! / n - mean * mean : Number.NaN;
    const p = psi(reference.proportions, counts, n);
    const d = ks(reference.proportions, counts, n);
    const finite = (x: number) => (Number.isFinite(x) ? round(x) : null);
    return {
      psi: round(p),
      ks: round(d),
      ks_p_value: round(ksPValue(d, n, referenceRows)),
      mean: finite(mean),
      std: finite(Math.sqrt(Math.max(0, variance))),
      reference_mean: finite(reference.mean),
      reference_std: finite(reference.std),
      drifted: p > opts.psiThreshold,
    };
  };

  const report = (entry: ModelEntry): DriftReport => {
    const s = stateOf(entry);
    const ref = s.reference;
    const enough = ref !== undefined && s.windowRows >= Math.max(1, opts.minRows);
    const features = enough
      ? ref.features.map((f, i) => ({ name: f.name, ...seriesStats(s, i, f, ref.rows) }))
      : [];
    const prediction =
      enough && ref.prediction && s.spec?.score
        ? seriesStats(s, ref.features.length, ref.prediction, ref.rows)
        : null;
    let classes: DriftReport['classes'] = null;
    if (enough && ref.classes && s.spec?.score?.kind === 'probabilities') {
      const counts = s.window!.subarray(s.layout!.classes, s.layout!.classes + ref.classes.length);
      const n = counts.reduce((a, b) => a + b, 0);
      if (n > 0) {
        const p = psi(ref.classes, counts, n);
        classes = {
          psi: round(p),
          proportions: Array.from(counts, (c) => round(c / n)),
          reference_proportions: ref.classes.map((c) => round(c)),
          drifted: p > opts.psiThreshold,
        };
      }
    }
    const driftedFeatures = features.filter((f) => f.drifted).map((f) => f.name);
    const drifted = driftedFeatures.length > 0 || prediction?.drifted === true || classes?.drifted === true;
    return {
      model: entry.name,
      version: entry.version,
      status: !entry.tabular
        ? 'unsupported'
        : !ref
          ? 'no_reference'
          : !enough
            ? 'collecting'
            : drifted
              ? 'drift'
              : 'ok',
      reference: ref ? { source: ref.source, rows: ref.rows } : null,
      problem: s.problem ?? null,
      capturing: s.capture ? { rows: s.capture.rows, target: s.capture.target } : null,
      window: {
        rows: s.windowRows,
        target_rows: opts.windowRows,
        min_rows: opts.minRows,
        rows_seen: s.rowsSeen,
      },
      psi_threshold: opts.psiThreshold,
      features,
      prediction,
      classes,
      drifted_features: driftedFeatures,
    };
  };

  return {
    /** The histogram spec a batch of this version is counted by; none without a reference, or unsampled. */
    spec(entry: ModelEntry): HistogramSpec | undefined {
      const s = stateOf(entry);
      if (!s.spec) return undefined;
      if (sample < 1 && random() >= sample) return undefined;
      return s.spec;
    },

    /** A batch ran: its counts join the window (counts by a spec since replaced are dropped). */
    batch(entry: ModelEntry, r: BatchReport): void {
      if (!r.histogram) return;
      const s = stateOf(entry);
      if (r.histogram.spec !== s.spec) return;
      for (const counts of r.histogram.counts) add(s, counts);
    },

    /**
     * While this version captures its reference from traffic: call the returned function with a copy of
     * each request's inputs and the outputs it got. Undefined otherwise (the common case: no copy is made).
     */
    capture(
      entry: ModelEntry,
    ): ((inputs: Record<string, Tensor>, outputs: Record<string, Tensor>, rows: number) => void) | undefined {
      const s = stateOf(entry);
      const c = s.capture;
      if (!c || c.rows >= c.target) return undefined;
      const tabular = entry.tabular!;
      const score = scoreSpec(entry);
      return (inputs, outputs, rows) => {
        if (s.capture !== c || c.rows >= c.target) return;
        const x = inputs[tabular.input];
        if (!x) return;
        const take = Math.min(rows, c.target - c.rows);
        const f = tabular.features;
        for (let r = 0; r < take; r++)
          for (let k = 0; k < f; k++) c.columns[k]!.push(Number(x.data[r * f + k]));
        const y = score ? outputs[score.output] : undefined;
        if (score && y && y.type !== 'int64') {
          const p = y.data as Float32Array;
          for (let r = 0; r < take; r++) {
            if (score.kind === 'probabilities') {
              c.scores.push(scoreOfProbabilities(p, r * score.classes, score.classes));
              c.classes.push(argmax(p, r * score.classes, score.classes));
            } else c.scores.push(p[(r * p.length) / rows]!);
          }
        }
        c.rows += take;
        if (c.rows < c.target) return;
        const reference = buildReference({
          source: 'captured',
          featureNames: Array.from({ length: f }, (_, i) => tabular.featureNames?.[i] ?? String(i)),
          columns: c.columns,
          scores: c.scores.length === c.rows ? c.scores : undefined,
          classes:
            score?.kind === 'probabilities' && c.classes.length === c.rows
              ? { values: c.classes, count: score.classes }
              : undefined,
        });
        void setReference(s, reference);
      };
    },

    /** Replace a version's reference (an upload): its window starts again. Resolves to whether it was kept. */
    setReference(entry: ModelEntry, reference: DriftReference): Promise<boolean> {
      return setReference(stateOf(entry), reference);
    },

    /** Capture a new reference from this version's next `rows` rows (its current one serves until then). */
    startCapture(entry: ModelEntry, rows: number): void {
      const s = stateOf(entry);
      if (!entry.tabular) {
        throw bad(
          'model',
          `model ${entry.name} does not take rows of features: drift is measured on tabular models`,
        );
      }
      s.capture = newCapture(entry, rows);
    },

    report,

    /** Every version among `entries` with statistics (gauges); versions no longer loaded are forgotten. */
    snapshot(entries: readonly ModelEntry[]): DriftReport[] {
      const keep = new Set(entries.map(keyOf));
      for (const [key, s] of states) {
        if (keep.has(key)) continue;
        s.dropped = true;
        states.delete(key);
      }
      return entries.filter((e) => e.tabular).map(report);
    },

    /** Seed 000's `drift_metrics`: the window's prediction mean, spread and count (null when none). */
    summary(entry: ModelEntry): { mean: number; std: number; count: number } | null {
      const s = stateOf(entry);
      if (!s.spec?.score || !s.layout || !s.window) return null;
      const at = s.layout.stats + 3 * s.reference!.features.length;
      const n = s.window[at]!;
      if (n === 0) return { mean: 0, std: 0, count: 0 };
      const mean = s.window[at + 1]! / n;
      return {
        mean: round(mean),
        std: round(Math.sqrt(Math.max(0, s.window[at + 2]! / n - mean * mean))),
        count: n,
      };
    },
  };
}
