/**
 * The model repository as Triton's repository extension serves it: every version found in the repository
 * with its state, and models loaded and unloaded on request. Unloading a model refuses its new requests at
 * once (503 ERR_MODEL_UNAVAILABLE), lets the ones already accepted finish, then has the backend release its
 * sessions; loading reads the model's versions from the repository again and has the backend create (and
 * warm) their sessions before the model takes requests. One change at a time; the other models serve
 * throughout.
 */
import type { InferenceBackend, ModelSource } from './backend.js';
import { ServeError } from './errors.js';
import type { Predictor } from './predictor.js';
import {
  createRegistry,
  describeModel,
  type ModelEntry,
  type ModelMetadata,
  type ModelRegistry,
} from './registry.js';

/** One version found in the repository. */
export interface StoredVersion {
  name: string;
  version: string;
  sha256: string;
  metadata?: ModelMetadata | undefined;
  /** What the backend loads (its id is `name@version`). */
  source: ModelSource;
}

export interface RepositoryOptions {
  backend: InferenceBackend;
  predictor: Predictor;
  /**
   * Every version in the repository now, or only model `name`'s (read again on each load, so one model's
   * broken files fail only its own load).
   */
  scan(name?: string): Promise<StoredVersion[]>;
  defaultModel?: string | undefined;
  /** Called with the versions each load made ready. */
  onLoaded?(entries: readonly ModelEntry[]): void;
}

export type ModelState = 'READY' | 'UNAVAILABLE' | 'LOADING';

export interface RepositoryIndexEntry {
  name: string;
  version: string;
  state: ModelState;
  reason: string;
}

export const modelUnavailable = (name: string, state: ModelState, reason: string) =>
  new ServeError(
    'ERR_MODEL_UNAVAILABLE',
    state === 'LOADING'
      ? `model '${name}' is loading; retry shortly`
      : `model '${name}' is unloaded (${reason}); POST /v2/repository/models/${name}/load loads it`,
    { field: 'model', ...(state === 'LOADING' ? { retryAfterSeconds: 1 } : {}) },
  );

const loadFailed = (name: string, err: unknown) =>
  new ServeError(
    'ERR_MODEL_LOAD_FAILED',
    `model '${name}' did not load: ${err instanceof Error ? err.message : String(err)}`,
    { field: 'name', cause: err },
  );

export function createModelRepository(opts: RepositoryOptions) {
  const { backend, predictor } = opts;
  /** Versions in the repository as last read, by name. */
  let stored = new Map<string, StoredVersion[]>();
  /** Loaded versions by id. */
  const loaded = new Map<string, ModelEntry>();
  /** Models in the repository that take no requests now, and why. */
  const unavailable = new Map<string, { state: ModelState; reason: string }>();
  let current: ModelRegistry = createRegistry([]);
  /** Load and unload requests run one at a time, in order. */
  let queue: Promise<unknown> = Promise.resolve();

  const rebuild = () => {
    const entries = [...loaded.values()];
    const names = new Set(entries.map((e) => e.name));
    current = createRegistry(entries, {
      defaultModel:
        opts.defaultModel !== undefined && names.has(opts.defaultModel) ? opts.defaultModel : undefined,
    });
  };

  /** The loaded versions' sources plus `extra`: the set the backend is to hold. */
  const sourcesWith = (extra: readonly StoredVersion[], without?: string) => {
    const keep = [...loaded.values()].filter((e) => e.name !== without);
    const byId = new Map<string, ModelSource>();
    for (const e of keep) {
      const s = stored.get(e.name)?.find((v) => v.version === e.version);
      if (s) byId.set(e.id, s.source);
    }
    for (const v of extra) byId.set(v.source.id, v.source);
    return [...byId.values()];
  };

  const read = async (name?: string) => {
    const found = await opts.scan(name);
    const next = new Map<string, StoredVersion[]>();
    for (const v of found) next.set(v.name, [...(next.get(v.name) ?? []), v]);
    return next;
  };

  const describe = (
    versions: readonly StoredVersion[],
    signatures: Awaited<ReturnType<InferenceBackend['load']>>,
  ) =>
    versions.map((v) => {
      const signature = signatures.get(v.source.id);
      if (!signature) throw new Error(`the backend did not load ${v.source.id}`);
      return describeModel({
        name: v.name,
        version: v.version,
        sha256: v.sha256,
        signature,
        metadata: v.metadata,
        loadSeconds: signature.loadSeconds ?? 0,
      });
    });

  const serially = <T>(work: () => Promise<T>): Promise<T> => {
    const run = queue.then(work, work);
    queue = run.catch(() => {});
    return run;
  };

  const registry: ModelRegistry = {
    get defaultModel() {
      return opts.defaultModel ?? current.defaultModel;
    },
    names: () => current.names(),
    versions: (n) => current.versions(n),
    all: () => current.all(),
    resolve(name, version) {
      const wanted = name ?? opts.defaultModel;
      const off = wanted === undefined ? undefined : unavailable.get(wanted);
      if (off) throw modelUnavailable(wanted!, off.state, off.reason);
      return current.resolve(name, version);
    },
  };

  return {
    /** Requests see this: loaded versions resolve, unloaded and loading models are 503. */
    registry,

    /** Run `work` in the queue loads and unloads run in: none of them runs meanwhile. */
    exclusive: serially,

    /** Read the repository and load every version in it (at start). */
    loadAll(): Promise<ModelEntry[]> {
      return serially(async () => {
        stored = await read();
        const all = [...stored.values()].flat();
        const entries = describe(all, await backend.load(all.map((v) => v.source)));
        // A default model the repository lacks stops start-up, naming it.
        createRegistry(entries, { defaultModel: opts.defaultModel });
        for (const e of entries) loaded.set(e.id, e);
        rebuild();
        opts.onLoaded?.(entries);
        return entries;
      });
    },

    index(): RepositoryIndexEntry[] {
      const out: RepositoryIndexEntry[] = [];
      for (const [name, versions] of [...stored].sort(([a], [b]) => (a < b ? -1 : 1))) {
        const off = unavailable.get(name);
        for (const v of versions) {
          const ready = loaded.has(v.source.id);
          out.push({
            name,
            version: v.version,
            state: ready ? 'READY' : (off?.state ?? 'UNAVAILABLE'),
            reason: ready ? '' : (off?.reason ?? 'not loaded'),
          });
        }
      }
      return out;
    },

    /**
     * Load (or reload) a model: its versions are read from the repository again, their sessions created and
     * warmed in the backend, and only then does it take requests. The other models serve meanwhile, and so
     * does this model's loaded versions while a reload is under way: a reload that fails leaves them serving.
     * When every version's file is the one loaded (only model.json changed), the entries are described again
     * with the new metadata and the backend is left alone: no worker restarts.
     */
    load(name: string): Promise<ModelEntry[]> {
      return serially(async () => {
        if (!backend.replace) throw new ServeError('ERR_NOT_FOUND', 'this server loads its models once');
        let found: Map<string, StoredVersion[]>;
        try {
          found = await read(name);
        } catch (err) {
          throw loadFailed(name, err);
        }
        const versions = found.get(name);
        if (!versions) {
          throw new ServeError('ERR_MODEL_NOT_FOUND', `the repository holds no model '${name}'`, {
            field: 'name',
          });
        }
        const before = [...loaded.values()].filter((e) => e.name === name);
        const wasLoaded = before.length > 0;
        /** Requests see `entries` from now on. */
        const commit = (entries: ModelEntry[]) => {
          stored.set(name, versions);
          for (const e of before) loaded.delete(e.id);
          for (const e of entries) loaded.set(e.id, e);
          unavailable.delete(name);
          rebuild();
        };
        let entries: ModelEntry[] = [];
        const same =
          wasLoaded &&
          before.length === versions.length &&
          versions.every((v) => loaded.get(v.source.id)?.sha256 === v.sha256);
        if (same) {
          entries = versions.map((v) => {
            const e = loaded.get(v.source.id)!;
            return describeModel({
              name: v.name,
              version: v.version,
              sha256: v.sha256,
              signature: e.signature,
              metadata: v.metadata,
              loadSeconds: e.loadSeconds,
            });
          });
          commit(entries);
        } else {
          const gone = before.filter((e) => !versions.some((v) => v.source.id === e.id)).map((e) => e.id);
          if (!wasLoaded) unavailable.set(name, { state: 'LOADING', reason: 'loading' });
          try {
            await backend.replace(sourcesWith(versions, name), {
              // The new versions take requests the moment the new sessions do, with nothing in between.
              ready: (signatures) => {
                entries = describe(versions, signatures);
                commit(entries);
              },
              // Requests already given a version that is gone finish on the sessions that hold it.
              moved: () => predictor.settled(gone),
            });
          } catch (err) {
            if (!wasLoaded)
              unavailable.set(name, { state: 'UNAVAILABLE', reason: `load failed: ${String(err)}` });
            throw err instanceof ServeError ? err : loadFailed(name, err);
          }
        }
        opts.onLoaded?.(entries);
        return entries;
      });
    },

    /**
     * Unload a model: new requests for it are refused at once, the ones already accepted finish, then its
     * sessions are released in the backend.
     */
    unload(name: string): Promise<void> {
      return serially(async () => {
        if (!backend.replace) throw new ServeError('ERR_NOT_FOUND', 'this server loads its models once');
        if (!stored.has(name)) {
          throw new ServeError('ERR_MODEL_NOT_FOUND', `the repository holds no model '${name}'`, {
            field: 'name',
          });
        }
        const ids = [...loaded.values()].filter((e) => e.name === name).map((e) => e.id);
        if (ids.length === 0) return;
        unavailable.set(name, { state: 'UNAVAILABLE', reason: 'unloading' });
        await predictor.settled(ids);
        await backend.replace(sourcesWith([], name));
        for (const id of ids) loaded.delete(id);
        unavailable.set(name, { state: 'UNAVAILABLE', reason: 'unloaded' });
        rebuild();
      });
    },
  };
}

export type ModelRepository = ReturnType<typeof createModelRepository>;
