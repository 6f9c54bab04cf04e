/**
 * Where stage changes and traffic policies live on Node, beyond this process:
 *   - each change is a row of `model_stage_history` in the store the audit log uses (Postgres, or the
 *     embedded SQLite file), queryable like the audit table;
 *   - a version's `stage` and its recent `stage_history` are mirrored into its model.json, so the stage
 *     travels with the model files: a restart, or another replica reading the same directory (its watcher
 *     refreshes the metadata), serves the same version;
 *   - a model's traffic policy is kept in MODELS_DIR/<name>/traffic.json, read at start.
 * A store that is down, or a read-only models directory, does not stop a change: the answer says where it
 * was persisted, and the warning is logged.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AuditStore } from '../core/audit-sql.js';
import {
  type LifecycleStore,
  STAGES,
  type Stage,
  type StageChange,
  type TrafficPolicy,
} from '../core/lifecycle.js';
import { log } from './log.js';

const TABLE = 'model_stage_history';
/** The table in each store's dialect (SQLite keeps `at` as ISO 8601 text, which sorts as time does). */
const SQL = {
  postgres: {
    schema: `
CREATE TABLE IF NOT EXISTS ${TABLE} (
  id bigserial PRIMARY KEY,
  model text NOT NULL,
  version text NOT NULL,
  stage text NOT NULL,
  previous text,
  at timestamptz NOT NULL,
  by_key text,
  reason text
);
CREATE INDEX IF NOT EXISTS ${TABLE}_model_version_at ON ${TABLE} (model, version, at DESC);
`,
    insert: `INSERT INTO ${TABLE} (model, version, stage, previous, at, by_key, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
    history: `SELECT model, version, stage, previous, at, by_key, reason FROM ${TABLE}
             WHERE model = $1 AND ($2::text IS NULL OR version = $2) ORDER BY at DESC, id DESC LIMIT 500`,
  },
  sqlite: {
    schema: `
CREATE TABLE IF NOT EXISTS ${TABLE} (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  model TEXT NOT NULL,
  version TEXT NOT NULL,
  stage TEXT NOT NULL,
  previous TEXT,
  at TEXT NOT NULL,
  by_key TEXT,
  reason TEXT
);
CREATE INDEX IF NOT EXISTS ${TABLE}_model_version_at ON ${TABLE} (model, version, at DESC);
`,
    insert: `INSERT INTO ${TABLE} (model, version, stage, previous, at, by_key, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)`,
    history: `SELECT model, version, stage, previous, at, by_key, reason FROM ${TABLE}
             WHERE model = ?1 AND (?2 IS NULL OR version = ?2) ORDER BY at DESC, id DESC LIMIT 500`,
  },
};
/** model.json keeps this many changes; the store keeps them all. */
const FILE_HISTORY = 100;

const isStage = (s: unknown): s is Stage =>
  typeof s === 'string' && (STAGES as readonly string[]).includes(s);

/** Write a file whole or not at all: a reader (another replica's watcher) never sees half of it. */
let tmpSeq = 0;
async function writeAtomic(path: string, text: string) {
  // A name of its own per write: two writes sharing one temporary file interleave their bytes, and the
  // rename then publishes the mixture (seen: a model.json no scan could read after concurrent promotions).
  const tmp = `${path}.${process.pid}.${tmpSeq++}.tmp`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

/** Read-modify-write of one file at a time: concurrent changes to a model.json each keep the other's. */
const fileTurns = new Map<string, Promise<unknown>>();
function inTurn<T>(path: string, change: () => Promise<T>): Promise<T> {
  const before = fileTurns.get(path) ?? Promise.resolve();
  const mine = before.then(change, change);
  const settled = mine.catch(() => {});
  fileTurns.set(path, settled);
  void settled.then(() => {
    if (fileTurns.get(path) === settled) fileTurns.delete(path);
  });
  return mine;
}

/**
 * Sets one field of a version's model.json (read, changed, written whole, in turn with every other change to
 * that file). False, with a warning, when the file cannot be written (a read-only models directory).
 */
export async function setModelJsonField(
  modelsDir: string,
  model: string,
  version: string,
  field: string,
  value: unknown,
): Promise<boolean> {
  const path = join(modelsDir, model, version, 'model.json');
  try {
    await inTurn(path, async () => {
      const meta = existsSync(path)
        ? (JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>)
        : {};
      meta[field] = value;
      await writeAtomic(path, `${JSON.stringify(meta, null, 2)}\n`);
    });
    return true;
  } catch (err) {
    log('warn', `${field} not written to model.json (it holds in this process until restart)`, {
      model,
      version,
      error: String(err),
    });
    return false;
  }
}

export function createLifecycleStore(opts: { modelsDir: string; store?: AuditStore }): LifecycleStore & {
  loadTraffic(): Promise<Record<string, TrafficPolicy>>;
} {
  const { modelsDir, store } = opts;
  let schema: Promise<void> | undefined;
  const ensureSchema = () => {
    schema ??= store!.query(SQL[store!.kind].schema).then(
      () => undefined,
      (err) => {
        schema = undefined; // tried again next time
        throw err;
      },
    );
    return schema;
  };
  const metaPath = (model: string, version: string) => join(modelsDir, model, version, 'model.json');
  const readMeta = async (model: string, version: string): Promise<Record<string, unknown>> => {
    const path = metaPath(model, version);
    if (!existsSync(path)) return {};
    return JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  };
  const fileHistory = async (model: string, version: string): Promise<StageChange[]> => {
    const meta = await readMeta(model, version).catch(() => ({}) as Record<string, unknown>);
    const list = Array.isArray(meta.stage_history) ? (meta.stage_history as Record<string, unknown>[]) : [];
    return list
      .filter((h) => isStage(h.stage))
      .map((h) => ({
        model,
        version,
        stage: h.stage as Stage,
        previous: isStage(h.previous) ? h.previous : null,
        at: String(h.at ?? ''),
        by: typeof h.by === 'string' ? h.by : null,
        reason: typeof h.reason === 'string' ? h.reason : null,
      }))
      .reverse();
  };
  const versionsOf = async (model: string) => {
    const entries = await readdir(join(modelsDir, model), { withFileTypes: true }).catch(() => []);
    return entries.filter((e) => e.isDirectory()).map((e) => e.name);
  };

  return {
    async recordStage(change) {
      const persisted = { store: false, model_json: false };
      try {
        const path = metaPath(change.model, change.version);
        await inTurn(path, async () => {
          const meta = await readMeta(change.model, change.version);
          const history = Array.isArray(meta.stage_history) ? meta.stage_history : [];
          const { model: _m, version: _v, ...entry } = change;
          meta.stage = change.stage;
          meta.stage_history = [...history, entry].slice(-FILE_HISTORY);
          await writeAtomic(path, `${JSON.stringify(meta, null, 2)}\n`);
        });
        persisted.model_json = true;
      } catch (err) {
        log('warn', 'stage change not written to model.json (it holds until the next reload)', {
          model: change.model,
          version: change.version,
          error: String(err),
        });
      }
      if (store) {
        try {
          await ensureSchema();
          await store.query(SQL[store.kind].insert, [
            change.model,
            change.version,
            change.stage,
            change.previous,
            change.at,
            change.by,
            change.reason,
          ]);
          persisted.store = true;
        } catch (err) {
          log('warn', 'stage change not written to the store', {
            model: change.model,
            version: change.version,
            store: store.kind,
            error: String(err),
          });
        }
      }
      return persisted;
    },

    async stageHistory(model, version) {
      if (store) {
        try {
          await ensureSchema();
          const rows = await store.query<Record<string, unknown>>(SQL[store.kind].history, [
            model,
            version ?? null,
          ]);
          return rows.map((r) => ({
            model: String(r.model),
            version: String(r.version),
            stage: r.stage as Stage,
            previous: (r.previous as Stage | null) ?? null,
            at: new Date(r.at as string | Date).toISOString(),
            by: (r.by_key as string | null) ?? null,
            reason: (r.reason as string | null) ?? null,
          }));
        } catch {
          // The store is down: model.json's recent history instead.
        }
      }
      const versions = version !== undefined ? [version] : await versionsOf(model);
      const all = (await Promise.all(versions.map((v) => fileHistory(model, v)))).flat();
      return all.sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0));
    },

    async saveTraffic(model, policy) {
      const path = join(modelsDir, model, 'traffic.json');
      try {
        // In turn: the last policy set is the one on disk.
        await inTurn(path, () =>
          policy ? writeAtomic(path, `${JSON.stringify(policy, null, 2)}\n`) : rm(path, { force: true }),
        );
        return true;
      } catch (err) {
        log('warn', 'traffic policy not written (it holds in this process until restart)', {
          model,
          error: String(err),
        });
        return false;
      }
    },

    async loadTraffic() {
      const out: Record<string, TrafficPolicy> = {};
      const models = await readdir(modelsDir, { withFileTypes: true }).catch(() => []);
      for (const m of models) {
        if (!m.isDirectory()) continue;
        const path = join(modelsDir, m.name, 'traffic.json');
        if (!existsSync(path)) continue;
        try {
          const p = JSON.parse(await readFile(path, 'utf8')) as TrafficPolicy;
          const weightsOk =
            p &&
            typeof p.split === 'object' &&
            Object.values(p.split).every((w) => typeof w === 'number' && w >= 0);
          const shadowOk =
            p.shadow === undefined ||
            (typeof p.shadow.version === 'string' && typeof p.shadow.sample === 'number');
          if (!weightsOk || !shadowOk) throw new Error('not a traffic policy');
          out[m.name] = {
            split: p.split,
            sticky: p.sticky !== false,
            ...(p.shadow ? { shadow: p.shadow } : {}),
          };
        } catch (err) {
          log('warn', 'traffic.json ignored', { model: m.name, error: String(err) });
        }
      }
      return out;
    },
  };
}
