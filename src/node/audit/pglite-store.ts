import { Worker } from 'node:worker_threads';
import type { PgliteReply, PgliteRequest } from '../../../workers/pglite-protocol.js';
import type { AuditStore } from '../../core/audit-sql.js';
import { compiledWorker } from '../worker-file.js';

/**
 * The embedded default: PGlite (Postgres compiled to WASM) with its data in `dir`. It runs in a worker
 * thread of its own: PGlite executes synchronously, and a 1,000-row insert took 20-30 ms on this machine,
 * time the event loop would otherwise lose.
 */
export function createPgliteStore(opts: { dir: string; timeoutMs?: number }): AuditStore {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const worker = new Worker(compiledWorker('pglite-worker.js'), { workerData: { dir: opts.dir } });
  worker.unref();
  let next = 0;
  const waiting = new Map<number, { resolve: (v: PgliteReply) => void; reject: (e: Error) => void }>();
  worker.on('message', (reply: PgliteReply) => {
    const w = waiting.get(reply.id);
    waiting.delete(reply.id);
    if (!w) return;
    if (reply.error !== undefined) w.reject(Object.assign(new Error(reply.error), { code: reply.code }));
    else w.resolve(reply);
  });
  worker.on('error', (err) => {
    for (const w of waiting.values()) w.reject(err);
    waiting.clear();
  });
  /** One request to the worker; past `ms` it fails (the store counts as down), whatever the worker does. */
  const ask = (req: Omit<PgliteRequest, 'id'>, ms = timeoutMs) => {
    let timer: NodeJS.Timeout | undefined;
    const id = next++;
    return new Promise<PgliteReply>((resolve, reject) => {
      waiting.set(id, { resolve, reject });
      timer = setTimeout(() => {
        waiting.delete(id);
        reject(new Error(`the embedded audit store did not answer ${req.op} within ${ms} ms`));
      }, ms);
      worker.ref();
      worker.postMessage({ ...req, id });
    }).finally(() => {
      clearTimeout(timer);
      if (waiting.size === 0) worker.unref();
    });
  };

  return {
    kind: 'pglite',
    async init() {
      // The first start runs initdb: seconds, more on a loaded machine.
      await ask({ op: 'init' }, Math.max(timeoutMs, 120_000));
    },
    async insert(jsonArray) {
      return (await ask({ op: 'insert', json: jsonArray })).count ?? 0;
    },
    async query<T>(sql: string, params?: unknown[]) {
      return ((await ask({ op: 'query', sql, params })).rows ?? []) as T[];
    },
    async close() {
      await ask({ op: 'close' }, 5000).catch(() => {});
      await worker.terminate();
    },
  };
}
