/**
 * Which version of a model answers a request that names none: stages (staging, production, archived, as
 * MLflow's registry has them) and traffic policies set at run time (one version, a weighted A/B split or a
 * canary, sticky per caller, and a shadow version that also runs requests off their path and is compared,
 * never returned).
 *
 * Without a policy the production version serves; without one, the newest. A request that names a version
 * gets that version, whatever the policy. The registry this module returns wraps the repository's: every
 * route resolves through it, so a change applies to the next request that arrives, and requests already
 * accepted finish on the version they were given.
 */
import { ServeError } from './errors.js';
import type { ModelEntry, ModelRegistry } from './registry.js';

export const STAGES = ['staging', 'production', 'archived'] as const;
export type Stage = (typeof STAGES)[number];

/** One stage change, as persisted in the store's history and in model.json. */
export interface StageChange {
  model: string;
  version: string;
  stage: Stage;
  /** The stage before (null: none). */
  previous: Stage | null;
  /** ISO time. */
  at: string;
  /** Who: the API key's name, or null when the admin routes are open. */
  by: string | null;
  reason: string | null;
}

/** A traffic policy for one model, as `PUT /models/{name}/traffic` takes it. */
export interface TrafficPolicy {
  /** Version → weight (any positive numbers; their share of the total is each version's share of requests). */
  split: Record<string, number>;
  /** The same caller (API key, else X-Client-Id) always gets the same version (default true). */
  sticky: boolean;
  /** A version that also runs every request (or `sample` of them) off the request's path, compared, never returned. */
  shadow?: { version: string; sample: number };
}

/** Where stage changes (and policies) are kept beyond this process: Node writes model.json and the store. */
export interface LifecycleStore {
  /** Persist a change; says where it went (a store that is down does not stop the change). */
  recordStage(change: StageChange): Promise<{ store: boolean; model_json: boolean }>;
  /** The history of a model (one version, or all), newest first. */
  stageHistory(model: string, version?: string): Promise<StageChange[]>;
  /** Persist a model's policy (null: cleared); false when it could not be written. */
  saveTraffic?(model: string, policy: TrafficPolicy | null): Promise<boolean>;
}

/** Who is asking, for a prediction: the split applies (and sticks to the caller when one is known). */
export interface Caller {
  id?: string | undefined;
}

/** The registry routes read, with the version choice of `Lifecycle` for requests that name no version. */
export interface RoutedRegistry extends ModelRegistry {
  /**
   * `caller` present: a prediction, routed by the model's policy (a weighted pick, sticky when the caller
   * is known). Absent: the model's primary version (production, else the policy's heaviest, else newest).
   */
  resolve(name?: string, version?: string, caller?: Caller): ModelEntry;
}

/** Shadow comparisons for one model since its shadow was set. */
export interface ShadowReport {
  model: string;
  shadow_version: string;
  sample: number;
  since: string;
  /** Requests whose shadow run finished and was compared. */
  requests: number;
  rows: number;
  /** Shadow runs that failed (its errors never reach clients). */
  failures: number;
  /** Skipped because too many shadow runs were still in flight. */
  skipped: number;
  /** Skipped because the server had no spare capacity then (a shadow only uses what serving leaves). */
  skipped_busy: number;
  /** Rows whose predicted class (or value) equals the serving version's. */
  agreement_rate: number | null;
  /** Per row, the largest absolute difference between the two versions' probabilities: its mean and max. */
  mean_probability_difference: number | null;
  max_probability_difference: number | null;
  /** Model run time per request (ms), by version: the serving versions' and the shadow's. */
  latency_ms: Record<string, { count: number; mean: number; p50: number; p99: number }>;
}

/** FNV-1a, 32 bits: a caller's place in [0, 1) for a model, the same on every replica and after restarts. */
function bucket(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) / 2 ** 32;
}

/** Latencies of the last `size` runs (a ring), for percentiles. */
class Latencies {
  #values: number[] = [];
  #next = 0;
  count = 0;
  #sum = 0;
  constructor(private readonly size = 2048) {}
  add(ms: number) {
    this.count++;
    this.#sum += ms;
    if (this.#values.length < this.size) this.#values.push(ms);
    else this.#values[this.#next] = ms;
    this.#next = (this.#next + 1) % this.size;
  }
  summary() {
    const sorted = [...this.#values].sort((a, b) => a - b);
    const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
    const r = (x: number) => Math.round(x * 1000) / 1000;
    return {
      count: this.count,
      mean: r(this.count ? this.#sum / this.count : 0),
      p50: r(at(0.5)),
      p99: r(at(0.99)),
    };
  }
}

interface ShadowState {
  report: Omit<ShadowReport, 'agreement_rate' | 'mean_probability_difference' | 'latency_ms'>;
  agreed: number;
  compared: number;
  diffSum: number;
  diffRows: number;
  latency: Map<string, Latencies>;
}

export interface LifecycleOptions {
  /** The repository's registry (what is loaded). */
  registry: ModelRegistry;
  store?: LifecycleStore;
  /** Policies persisted earlier, by model (checked against what is loaded when first used). */
  traffic?: Record<string, TrafficPolicy>;
  /** Most shadow runs in flight at once; past it a request is not shadowed (counted as skipped). */
  maxShadowInFlight?: number;
  /**
   * True while the server has no capacity to spare (on Node: its event loop busy most of the last moment).
   * A shadow run then is skipped (counted as skipped_busy): at saturation it would take its CPU from the
   * requests it shadows (closed loop at 50 connections: 14 % of throughput and 6 ms of p99).
   */
  busy?: () => boolean;
  random?: () => number;
  now?: () => Date;
  /**
   * Runs a stage change apart from the repository's loads (their queue): a reload reads model.json, and one
   * that read it between a change in memory and its file would put the old stage back (seen under load: a
   * rolled-back version kept serving until the next change).
   */
  exclusive?: <T>(work: () => Promise<T>) => Promise<T>;
}

const notFound = (field: string, message: string) =>
  new ServeError('ERR_VERSION_NOT_FOUND', message, { field });
const invalid = (field: string, message: string) => new ServeError('ERR_VALIDATION', message, { field });

export function createLifecycle(opts: LifecycleOptions) {
  const inner = opts.registry;
  const random = opts.random ?? Math.random;
  const now = opts.now ?? (() => new Date());
  const policies = new Map<string, TrafficPolicy>(Object.entries(opts.traffic ?? {}));
  /** A shadow's comparison, from nothing. */
  const freshShadow = (name: string, shadow: NonNullable<TrafficPolicy['shadow']>): ShadowState => ({
    report: {
      model: name,
      shadow_version: shadow.version,
      sample: shadow.sample,
      since: now().toISOString(),
      requests: 0,
      rows: 0,
      failures: 0,
      skipped: 0,
      skipped_busy: 0,
      max_probability_difference: null,
    },
    agreed: 0,
    compared: 0,
    diffSum: 0,
    diffRows: 0,
    latency: new Map(),
  });
  // A policy read back at start (traffic.json) runs its shadow as the one set before the restart did: without
  // its comparison here, the shadow never ran and its report said there was none.
  const shadows = new Map<string, ShadowState>();
  for (const [name, policy] of policies)
    if (policy.shadow) shadows.set(name, freshShadow(name, policy.shadow));
  const maxShadowInFlight = opts.maxShadowInFlight ?? 64;
  let shadowInFlight = 0;

  const exclusive = opts.exclusive ?? (<T>(work: () => Promise<T>) => work());
  const stageOf = (e: ModelEntry): Stage | undefined => {
    const s = e.metadata.stage;
    return typeof s === 'string' && (STAGES as readonly string[]).includes(s) ? (s as Stage) : undefined;
  };
  const loaded = (name: string, version: string) => inner.versions(name).find((e) => e.version === version);

  /** The versions a policy splits over that are loaded now, with their weights (a version gone is skipped). */
  const liveSplit = (name: string, policy: TrafficPolicy) => {
    const out: { entry: ModelEntry; weight: number }[] = [];
    for (const [version, weight] of Object.entries(policy.split)) {
      const entry = loaded(name, version);
      if (entry && weight > 0) out.push({ entry, weight });
    }
    return out;
  };

  /** Production (the newest such, should there be several), else newest, among the loaded versions. */
  const byStage = (name: string): ModelEntry | undefined => {
    const versions = inner.versions(name);
    for (let i = versions.length - 1; i >= 0; i--)
      if (stageOf(versions[i]!) === 'production') return versions[i];
    return versions.at(-1);
  };

  const primary = (name: string): ModelEntry | undefined => {
    const policy = policies.get(name);
    if (policy) {
      const split = liveSplit(name, policy);
      if (split.length > 0) return split.reduce((a, b) => (b.weight > a.weight ? b : a)).entry;
    }
    return byStage(name);
  };

  const route = (name: string, caller: Caller): ModelEntry | undefined => {
    const policy = policies.get(name);
    if (!policy) return byStage(name);
    const split = liveSplit(name, policy);
    if (split.length === 0) return byStage(name);
    if (split.length === 1) return split[0]!.entry;
    const total = split.reduce((s, x) => s + x.weight, 0);
    const at =
      (policy.sticky && caller.id !== undefined ? bucket(`${caller.id}\u0000${name}`) : random()) * total;
    let sum = 0;
    for (const x of split) {
      sum += x.weight;
      if (at < sum) return x.entry;
    }
    return split.at(-1)!.entry;
  };

  const registry: RoutedRegistry = {
    get defaultModel() {
      return inner.defaultModel;
    },
    names: () => inner.names(),
    versions: (n) => inner.versions(n),
    all: () => inner.all(),
    resolve(name, version, caller) {
      // Unknown, unloaded or loading models, and named versions, are the repository's answer.
      const entry = inner.resolve(name, version);
      if (version !== undefined) return entry;
      return (caller ? route(entry.name, caller) : primary(entry.name)) ?? entry;
    },
  };

  const requireVersion = (name: string, version: string, field = 'version') => {
    inner.resolve(name); // 404 for an unknown model, 503 for one unloaded
    const entry = loaded(name, version);
    if (!entry) throw notFound(field, `model '${name}' has no loaded version '${version}'`);
    return entry;
  };

  const traffic = (name: string) => {
    inner.resolve(name);
    const policy = policies.get(name) ?? null;
    const split = policy ? liveSplit(name, policy) : [];
    const total = split.reduce((s, x) => s + x.weight, 0);
    return {
      model: name,
      policy,
      /** What requests that name no version get now, and each version's share. */
      serving:
        split.length > 0
          ? split.map((x) => ({
              version: x.entry.version,
              share: Math.round((x.weight / total) * 1e4) / 1e4,
            }))
          : [{ version: byStage(name)!.version, share: 1 }],
      by: split.length > 0 ? 'policy' : stageOf(byStage(name)!) === 'production' ? 'stage' : 'newest',
    };
  };

  /** A stage change: in memory (the next request sees it), then in model.json and the store. */
  async function setStage(
    name: string,
    version: string,
    stage: Stage,
    how: { by: string | null; reason: string | null; archiveExisting?: boolean },
  ) {
    const entry = requireVersion(name, version);
    const at = now().toISOString();
    const changes: StageChange[] = [];
    const change = (e: ModelEntry, to: Stage, reason: string | null) => {
      const previous = stageOf(e) ?? null;
      if (previous === to) return;
      e.metadata.stage = to; // applies to the next request; model.json is written below
      changes.push({ model: name, version: e.version, stage: to, previous, at, by: how.by, reason });
    };
    if (stage === 'production' && how.archiveExisting !== false) {
      for (const other of inner.versions(name)) {
        if (other !== entry && stageOf(other) === 'production') {
          change(other, 'archived', `version ${version} promoted to production`);
        }
      }
    }
    const previous = stageOf(entry) ?? null;
    change(entry, stage, how.reason);
    const persisted = { store: true, model_json: true };
    for (const c of changes) {
      const p = opts.store ? await opts.store.recordStage(c) : { store: false, model_json: false };
      persisted.store &&= p.store;
      persisted.model_json &&= p.model_json;
    }
    return {
      model: name,
      version,
      stage,
      previous,
      archived: changes.filter((c) => c.version !== version).map((c) => c.version),
      serving: primary(name)?.version ?? null,
      persisted: changes.length === 0 ? { store: null, model_json: null } : persisted,
    };
  }

  return {
    registry,

    stage: (name: string, version: string): Stage | null => stageOf(requireVersion(name, version)) ?? null,

    /** Each loaded version of a model with its stage, and the version serving requests that name none. */
    stages(name: string) {
      const entries = inner.versions(name);
      if (entries.length === 0) inner.resolve(name);
      return entries.map((e) => ({ version: e.version, stage: stageOf(e) ?? null }));
    },

    /**
     * Set a version's stage. Promoting one to production archives the version that was production (unless
     * `archiveExisting` is false), so that exactly one serves by default; every change is recorded.
     */
    setStage(
      name: string,
      version: string,
      stage: Stage,
      how: { by: string | null; reason: string | null; archiveExisting?: boolean },
    ) {
      return exclusive(() => setStage(name, version, stage, how));
    },

    history: (name: string, version?: string) => {
      if (version !== undefined) requireVersion(name, version);
      else inner.resolve(name);
      return opts.store ? opts.store.stageHistory(name, version) : Promise.resolve([]);
    },

    traffic,

    /** Set (or with null, clear) a model's policy; every version it names must be loaded. */
    async setTraffic(name: string, policy: TrafficPolicy | null) {
      inner.resolve(name);
      if (policy) {
        for (const version of Object.keys(policy.split)) requireVersion(name, version, `split.${version}`);
        if (policy.shadow) {
          requireVersion(name, policy.shadow.version, 'shadow.version');
          if ((policy.split[policy.shadow.version] ?? 0) > 0) {
            throw invalid(
              'shadow.version',
              `version ${policy.shadow.version} already serves; a shadow must not`,
            );
          }
        }
      }
      const before = policies.get(name);
      if (policy) policies.set(name, policy);
      else policies.delete(name);
      // A new shadow (or a different one) starts its comparison afresh.
      const shadow = policy?.shadow;
      if (!shadow) shadows.delete(name);
      else if (before?.shadow?.version !== shadow.version || !shadows.has(name)) {
        shadows.set(name, freshShadow(name, shadow));
      } else shadows.get(name)!.report.sample = shadow.sample;
      const persisted = opts.store?.saveTraffic ? await opts.store.saveTraffic(name, policy) : false;
      return { ...traffic(name), persisted };
    },

    /**
     * The shadow version to run beside a request served by `served`, if its model has one and this request
     * is sampled; undefined otherwise. The caller runs it off the request's path (`began` when it starts)
     * and reports with `compare`.
     */
    shadowFor(served: ModelEntry): ModelEntry | undefined {
      const policy = policies.get(served.name);
      const state = shadows.get(served.name);
      if (!policy?.shadow || !state || served.version === policy.shadow.version) return undefined;
      if (policy.shadow.sample < 1 && random() >= policy.shadow.sample) return undefined;
      const entry = loaded(served.name, policy.shadow.version);
      if (!entry) return undefined;
      if (shadowInFlight >= maxShadowInFlight) {
        state.report.skipped++;
        return undefined;
      }
      if (opts.busy?.()) {
        state.report.skipped_busy++;
        return undefined;
      }
      return entry;
    },

    began() {
      shadowInFlight++;
    },

    /**
     * A shadow run's outcome, against the served answer: `rows` rows, each version's predicted class (or
     * value) and probabilities per row; `failed` when the shadow run threw.
     */
    compare(
      served: ModelEntry,
      shadow: ModelEntry,
      outcome:
        | { failed: true }
        | {
            failed?: false;
            rows: number;
            served: {
              prediction: ArrayLike<number | bigint> | undefined;
              probabilities: ArrayLike<number> | undefined;
              ms: number | undefined;
            };
            shadow: {
              prediction: ArrayLike<number | bigint> | undefined;
              probabilities: ArrayLike<number> | undefined;
              ms: number;
            };
          },
    ) {
      shadowInFlight--;
      const state = shadows.get(served.name);
      if (!state || state.report.shadow_version !== shadow.version) return;
      if (outcome.failed) {
        state.report.failures++;
        return;
      }
      const r = state.report;
      r.requests++;
      r.rows += outcome.rows;
      const latency = (v: string) => {
        let l = state.latency.get(v);
        if (!l) {
          l = new Latencies();
          state.latency.set(v, l);
        }
        return l;
      };
      if (outcome.served.ms !== undefined) latency(served.version).add(outcome.served.ms);
      latency(shadow.version).add(outcome.shadow.ms);
      const a = outcome.served.prediction;
      const b = outcome.shadow.prediction;
      if (a && b && a.length === b.length && a.length === outcome.rows) {
        for (let i = 0; i < a.length; i++) if (Number(a[i]) === Number(b[i])) state.agreed++;
        state.compared += a.length;
      }
      const pa = outcome.served.probabilities;
      const pb = outcome.shadow.probabilities;
      if (pa && pb && pa.length === pb.length && pa.length % outcome.rows === 0) {
        const per = pa.length / outcome.rows;
        for (let row = 0; row < outcome.rows; row++) {
          let d = 0;
          for (let k = row * per; k < (row + 1) * per; k++) d = Math.max(d, Math.abs(pa[k]! - pb[k]!));
          state.diffSum += d;
          state.diffRows++;
          if (r.max_probability_difference === null || d > r.max_probability_difference)
            r.max_probability_difference = d;
        }
      }
    },

    shadowReport(name: string): ShadowReport | null {
      inner.resolve(name);
      const state = shadows.get(name);
      if (!state) return null;
      const round = (x: number) => Math.round(x * 1e6) / 1e6;
      return {
        ...state.report,
        agreement_rate: state.compared ? round(state.agreed / state.compared) : null,
        mean_probability_difference: state.diffRows ? round(state.diffSum / state.diffRows) : null,
        max_probability_difference:
          state.report.max_probability_difference === null
            ? null
            : round(state.report.max_probability_difference),
        latency_ms: Object.fromEntries([...state.latency].map(([v, l]) => [v, l.summary()])),
      };
    },
  };
}

export type Lifecycle = ReturnType<typeof createLifecycle>;
