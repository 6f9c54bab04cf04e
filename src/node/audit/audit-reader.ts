/** Queries on the audit store from the main thread: reads, and the lifecycle's small tables. */
import { Worker } from 'node:worker_threads';
import pg from 'pg';
import type { SqliteReply, SqliteRequest } from '../../../workers/sqlite-reader.js';
import type { AuditStore } from '../../core/audit-sql.js';
import { compiledWorker } from '../worker-file.js';

export type ReaderOptions =
  | { kind: 'postgres'; url: string; timeoutMs: number }
  | { kind: 'sqlite'; path: string; timeoutMs: number };

export function createAuditReader(opts: ReaderOptions): AuditStore {
  return opts.kind === 'postgres'
    ? pgReader(opts.url, opts.timeoutMs)
    : sqliteReader(opts.path, opts.timeoutMs);
}

function pgReader(url: string, timeoutMs: number): AuditStore {
  const pool = new pg.Pool({
    connectionString: url,
    // Two: a few large searches must not take every connection the database allows.
    max: 2,
    connectionTimeoutMillis: Math.min(2000, timeoutMs),
    // The server's own limit, and the client's: statement_timeout alone cannot fire when the network (or
    // the server) holds the bytes; query_timeout does, and its connection is discarded, not reused.
    statement_timeout: timeoutMs,
    query_timeout: timeoutMs + 1000,
    idleTimeoutMillis: 30_000,
  });
  pool.on('error', () => {}); // a dropped idle connection: the next query gets a fresh one
  return {
    kind: 'postgres',
    async query(sql, params) {
      return (await pool.query(sql, params)).rows;
    },
    async close() {
      await pool.end();
    },
  };
}

/** SQLite's reads on a thread of their own (workers/sqlite-reader.ts), started at the first query. */
function sqliteReader(path: string, timeoutMs: number): AuditStore {
  let worker: Worker | undefined;
  let next = 0;
  const waiting = new Map<number, { resolve: (v: SqliteReply) => void; reject: (e: Error) => void }>();
  const start = () => {
    if (worker) return worker;
    const w = new Worker(compiledWorker('sqlite-reader.js'), { workerData: { path } });
    w.unref();
    w.on('message', (reply: SqliteReply) => {
      const p = waiting.get(reply.id);
      waiting.delete(reply.id);
      if (!p) return;
      if (reply.error !== undefined) p.reject(Object.assign(new Error(reply.error), { code: reply.code }));
      else p.resolve(reply);
    });
    w.on('error', (err) => {
      for (const p of waiting.values()) p.reject(err);
      waiting.clear();
      worker = undefined;
    });
    worker = w;
    return w;
  };
  return {
    kind: 'sqlite',
    async query<T>(sql: string, params?: unknown[]) {
      const w = start();
      const id = next++;
      let timer: NodeJS.Timeout | undefined;
      const reply = await new Promise<SqliteReply>((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        timer = setTimeout(() => {
          waiting.delete(id);
          reject(new Error(`the audit store did not answer within ${timeoutMs} ms`));
        }, timeoutMs);
        w.ref();
        w.postMessage({ id, sql, params } satisfies SqliteRequest);
      }).finally(() => {
        clearTimeout(timer);
        if (waiting.size === 0) w.unref();
      });
      return (reply.rows ?? []) as T[];
    },
    async close() {
      await worker?.terminate();
      worker = undefined;
    },
  };
}
