/**
 * Reads of the embedded SQLite audit store (GET /audit, the lifecycle's stage history), on a thread of
 * their own: better-sqlite3 runs synchronously, and a large search must not hold the event loop, nor the
 * log writer thread (which would delay appends, and so what a hard kill may lose).
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { SQLITE_SCHEMA_SQL } from '../src/core/audit-sql.js';

export interface SqliteRequest {
  id: number;
  sql: string;
  params?: unknown[];
}
export interface SqliteReply {
  id: number;
  rows?: unknown[];
  error?: string;
  code?: string;
}

const { path } = workerData as { path: string };
let db: Database.Database | undefined;
const open = () => {
  if (db) return db;
  const d = new Database(path);
  d.pragma('journal_mode = WAL');
  d.pragma('busy_timeout = 5000');
  // The writer thread makes the schema too; either may come first.
  d.exec(SQLITE_SCHEMA_SQL);
  db = d;
  return d;
};

parentPort!.on('message', (req: SqliteRequest) => {
  const reply: SqliteReply = { id: req.id };
  try {
    const db = open();
    // Bytes arrive as Uint8Array (structured clone); better-sqlite3 binds Buffers as BLOBs.
    const params = (req.params ?? []).map((v) =>
      v instanceof Uint8Array && !Buffer.isBuffer(v) ? Buffer.from(v.buffer, v.byteOffset, v.byteLength) : v,
    );
    if (params.length === 0 && /;\s*\S/.test(req.sql.trim().replace(/;$/, ''))) {
      // Several statements (a schema): run them all, nothing to return.
      db.exec(req.sql);
      reply.rows = [];
    } else {
      const stmt = db.prepare(req.sql);
      // Numbered parameters (?1, ?2…) bind by name in better-sqlite3: { 1: …, 2: … }.
      const bound = /\?\d/.test(req.sql) ? [Object.fromEntries(params.map((v, i) => [i + 1, v]))] : params;
      if (stmt.reader) reply.rows = stmt.all(...bound);
      else {
        stmt.run(...bound);
        reply.rows = [];
      }
    }
  } catch (err) {
    reply.error = String((err as Error)?.message ?? err);
    const code = (err as { code?: unknown })?.code;
    if (typeof code === 'string') reply.code = code;
  }
  parentPort!.postMessage(reply);
});
