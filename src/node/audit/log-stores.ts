/**
 * Where the log writer thread puts records: Postgres (COPY in binary form, partitioned by day) or the
 * embedded SQLite file. Each batch is written together with the writer's position in its segment log, in
 * one transaction, so a batch is in the store exactly once whatever crashes in between: after a restart the
 * writer resumes from the position the store holds.
 */
import Database from 'better-sqlite3';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { fixedFields, ID_OFFSET, STRINGS_OFFSET } from '../../core/audit-codec.js';
import {
  AUDIT_COLUMNS,
  AUDIT_TABLE,
  dayOf,
  PG_PARTITIONS_SQL,
  PG_SCHEMA_SQL,
  PROGRESS_TABLE,
  partitionDay,
  partitionName,
  partitionSql,
  SQLITE_SCHEMA_SQL,
} from '../../core/audit-sql.js';
import type { Position } from './segment-log.js';

export interface LogStore {
  readonly kind: 'postgres' | 'sqlite';
  /** Connect and make the schema; throws when the store cannot be reached. */
  connect(): Promise<void>;
  /** The writer's position as the store last recorded it. */
  progress(writer: string): Promise<Position | undefined>;
  /** Insert records and move the writer's position to `to`, in one transaction. */
  write(payloads: readonly Uint8Array[], to: Position, writer: string): Promise<void>;
  /** Move the writer's position only (records set aside as dead letters). */
  skip(to: Position, writer: string): Promise<void>;
  /** Drop what is older than `days` days; returns what it dropped (partitions or rows). */
  retain(days: number): Promise<number>;
  close(): Promise<void>;
}

const PG_EPOCH_MS = Date.UTC(2000, 0, 1);
const CACHE_TEXT = [null, 'l1', 'l2', 'mixed'];
const textEncoder = new TextEncoder();
const CACHE_BYTES = CACHE_TEXT.map((t) => (t === null ? null : textEncoder.encode(t)));

/**
 * Records as a COPY … (FORMAT binary) stream: the strings and tensor packs are copied byte for byte from the
 * log's frames, numbers written big-endian; nothing is parsed or formatted as text on either side. One pass
 * over each payload, with a DataView per read buffer rather than per record: this runs once per record on
 * the writer thread, whose CPU is the second core's, shared with the inference workers.
 */
export function copyBinary(payloads: readonly Uint8Array[]): Uint8Array {
  let size = 19 + 2;
  for (const p of payloads) size += 2 + AUDIT_COLUMNS.length * 4 + p.byteLength + 16;
  let buf = new Uint8Array(size);
  let view = new DataView(buf.buffer);
  let o = 0;
  const ensure = (more: number) => {
    if (o + more <= buf.byteLength) return;
    const next = new Uint8Array(Math.max(buf.byteLength * 2, o + more));
    next.set(buf.subarray(0, o));
    buf = next;
    view = new DataView(buf.buffer);
  };
  buf.set([0x50, 0x47, 0x43, 0x4f, 0x50, 0x59, 0x0a, 0xff, 0x0d, 0x0a, 0x00], 0); // PGCOPY\n\377\r\n\0
  o = 11 + 8; // flags and header extension length: zero
  let source: ArrayBufferLike | undefined;
  let src: DataView<ArrayBufferLike> = new DataView(new ArrayBuffer(0));
  let bytesOf: Uint8Array<ArrayBufferLike> = new Uint8Array(0);
  /** A text field from the payload at absolute offset `at` (its u32 length first), NUL bytes made U+FFFD. */
  const text = (at: number): number => {
    const n = src.getUint32(at, true);
    if (n === 0xffffffff) {
      ensure(4);
      view.setInt32(o, -1);
      o += 4;
      return at + 4;
    }
    ensure(4 + 3 * n);
    const lengthAt = o;
    o += 4;
    const from = at + 4;
    if (n <= 96) {
      for (let i = 0; i < n; i++) {
        const b = bytesOf[from + i]!;
        if (b === 0) {
          // Postgres text cannot hold NUL (a client's request id may carry one): U+FFFD instead.
          buf[o++] = 0xef;
          buf[o++] = 0xbf;
          buf[o++] = 0xbd;
        } else buf[o++] = b;
      }
    } else {
      const chunk = bytesOf.subarray(from, from + n);
      if (chunk.indexOf(0) === -1) {
        buf.set(chunk, o);
        o += n;
      } else {
        for (const b of chunk) {
          if (b === 0) {
            buf[o++] = 0xef;
            buf[o++] = 0xbf;
            buf[o++] = 0xbd;
          } else buf[o++] = b;
        }
      }
    }
    view.setInt32(lengthAt, o - lengthAt - 4);
    return from + n;
  };
  /** A tensor pack at absolute offset `at`, as bytea; returns where it ends. */
  const pack = (at: number): number => {
    let e = at;
    const count = bytesOf[e++]!;
    for (let t = 0; t < count; t++) {
      e += 4 + src.getUint32(e, true);
      const rank = bytesOf[e + 1]!;
      e += 2 + 4 * rank;
      e += 4 + src.getUint32(e, true);
    }
    const n = e - at;
    ensure(4 + n);
    view.setInt32(o, n);
    buf.set(bytesOf.subarray(at, e), o + 4);
    o += 4 + n;
    return e;
  };
  for (const p of payloads) {
    if (p.buffer !== source) {
      source = p.buffer;
      src = new DataView(p.buffer);
      bytesOf = new Uint8Array(p.buffer);
    }
    const base = p.byteOffset;
    ensure(2 + 20 + 12);
    view.setInt16(o, AUDIT_COLUMNS.length);
    view.setInt32(o + 2, 16);
    buf.set(bytesOf.subarray(base + ID_OFFSET, base + ID_OFFSET + 16), o + 6);
    o += 22;
    // timestamptz: microseconds since 2000-01-01, as a signed 64-bit integer.
    const us = Math.round((src.getFloat64(base + 8, true) - PG_EPOCH_MS) * 1000);
    const high = Math.floor(us / 2 ** 32);
    view.setInt32(o, 8);
    view.setInt32(o + 4, high);
    view.setUint32(o + 8, us - high * 2 ** 32);
    o += 12;
    let at = base + STRINGS_OFFSET;
    for (let s = 0; s < 5; s++) at = text(at); // request_id, route, model, model_version, model_sha256
    ensure(16 + 4 + 5 + 6);
    view.setInt32(o, 4);
    view.setInt32(o + 4, src.getUint32(base + 4, true));
    view.setInt32(o + 8, 4);
    view.setFloat32(o + 12, src.getFloat32(base + 16, true));
    o += 16;
    const cache = CACHE_BYTES[bytesOf[base + 1]!] ?? null;
    if (cache === null) {
      view.setInt32(o, -1);
      o += 4;
    } else {
      view.setInt32(o, cache.length);
      buf.set(cache, o + 4);
      o += 4 + cache.length;
    }
    ensure(6);
    view.setInt32(o, 2);
    view.setInt16(o + 4, src.getUint16(base + 2, true));
    o += 6;
    at = text(at); // client_id
    at = text(at); // api_key
    at = pack(at); // input
    pack(at); // output
  }
  ensure(2);
  view.setInt16(o, -1);
  o += 2;
  return buf.subarray(0, o);
}

/** An error for a call that took longer than the store's time limit: the store counts as unreachable. */
class StoreTimeout extends Error {
  constructor(what: string, ms: number) {
    super(`the audit store did not answer ${what} within ${ms} ms`);
    this.name = 'StoreTimeout';
  }
}

export function createPgLogStore(opts: { url: string; timeoutMs: number }): LogStore {
  let client: pg.Client | undefined;
  const partitions = new Set<string>();
  /** Ends the connection: a call that timed out may hold it in any state. */
  const drop = () => {
    const c = client;
    client = undefined;
    if (!c) return;
    c.on('error', () => {});
    // The socket, to end a connection whose server has stopped answering (end() would wait for it).
    (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
    void c.end().catch(() => {});
  };
  /** Every call is bounded: a database that holds bytes must be noticed, not waited on for ever. */
  const bounded = async <T>(what: string, work: (c: pg.Client) => Promise<T>): Promise<T> => {
    const c = client;
    if (!c) throw new Error('the audit store is not connected');
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        work(c),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new StoreTimeout(what, opts.timeoutMs)), opts.timeoutMs);
        }),
      ]);
    } catch (err) {
      if (err instanceof StoreTimeout || !(err as { code?: string }).code) drop();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  };
  const ensurePartitions = async (payloads: readonly Uint8Array[]) => {
    const days = new Set<string>();
    for (const p of payloads) {
      const day = dayOf(fixedFields(p).time);
      if (!partitions.has(day)) days.add(day);
    }
    for (const day of days) {
      await bounded('a partition', async (c) => {
        try {
          await c.query(partitionSql(day));
        } catch (err) {
          // Another replica made it at the same moment.
          const code = (err as { code?: string }).code;
          if (code !== '42P07' && code !== '23505') throw err;
        }
      });
      partitions.add(day);
    }
  };
  const saveProgress = (c: pg.Client, to: Position, writer: string) =>
    c.query(
      `INSERT INTO ${PROGRESS_TABLE} (writer, segment, "offset", at) VALUES ($1, $2, $3, now())
       ON CONFLICT (writer) DO UPDATE SET segment = EXCLUDED.segment, "offset" = EXCLUDED."offset", at = now()`,
      [writer, to.segment, to.offset],
    );
  return {
    kind: 'postgres',
    async connect() {
      drop();
      const c = new pg.Client({
        connectionString: opts.url,
        connectionTimeoutMillis: Math.min(2000, opts.timeoutMs),
        statement_timeout: opts.timeoutMs,
      });
      c.on('error', () => {}); // a dropped connection fails the call in progress, which is handled there
      client = c;
      try {
        await bounded('connect', () => c.connect());
        await bounded('the schema', () => c.query(PG_SCHEMA_SQL));
      } catch (err) {
        drop();
        throw err;
      }
    },
    async progress(writer) {
      const rows = await bounded('a read of the progress', (c) =>
        c.query(`SELECT segment, "offset" FROM ${PROGRESS_TABLE} WHERE writer = $1`, [writer]),
      );
      const r = rows.rows[0];
      return r ? { segment: Number(r.segment), offset: Number(r.offset) } : undefined;
    },
    async write(payloads, to, writer) {
      await ensurePartitions(payloads);
      const data = copyBinary(payloads);
      await bounded('a batch', async (c) => {
        await c.query('BEGIN');
        try {
          await new Promise<void>((resolve, reject) => {
            const stream = c.query(
              copyFrom(`COPY ${AUDIT_TABLE} (${AUDIT_COLUMNS.join(', ')}) FROM STDIN (FORMAT binary)`),
            );
            stream.on('error', reject);
            stream.on('finish', resolve);
            stream.end(data);
          });
          await saveProgress(c, to, writer);
          await c.query('COMMIT');
        } catch (err) {
          await c.query('ROLLBACK').catch(() => {});
          throw err;
        }
      });
    },
    async skip(to, writer) {
      await bounded('the progress', (c) => saveProgress(c, to, writer));
    },
    async retain(days) {
      const cutoff = dayOf(Date.now() - days * 86_400_000);
      const rows = await bounded('the partitions', (c) => c.query(PG_PARTITIONS_SQL));
      let dropped = 0;
      for (const { name } of rows.rows as { name: string }[]) {
        const day = partitionDay(name);
        if (day === undefined || day >= cutoff) continue;
        await bounded('a partition drop', (c) => c.query(`DROP TABLE IF EXISTS ${partitionName(day)}`));
        partitions.delete(day);
        dropped++;
      }
      return dropped;
    },
    async close() {
      const c = client;
      client = undefined;
      if (c) await Promise.race([c.end().catch(() => {}), new Promise((r) => setTimeout(r, 1000))]);
    },
  };
}

/**
 * The embedded store: a SQLite file (better-sqlite3). Chosen over PGlite by measurement (README): about a
 * fifth of the CPU per record, in one native call per row on this thread.
 */
export function createSqliteLogStore(opts: { path: string }): LogStore {
  let db: Database.Database | undefined;
  let insert: Database.Statement | undefined;
  let progressStmt: Database.Statement | undefined;
  let tx: ((payloads: readonly Uint8Array[], to: Position, writer: string) => void) | undefined;
  /**
   * The repeated string fields (route, model, version, sha256): their last bytes and text, compared in place
   * rather than decoded again. Everything here runs once per record on the writer thread (one pass over the
   * payload, no intermediate objects): this store's own work is what the embedded default costs.
   */
  const seenBytes: (Buffer | null)[] = [null, null, null, null, null, null, null];
  const seenText: (string | null)[] = [null, null, null, null, null, null, null];
  let at = 0;
  /** The string at `at` in payload `p` (a Buffer): its text, or null; `at` moves past it. */
  const text = (p: Buffer, field: number): string | null => {
    const n = p.readUInt32LE(at);
    const from = at + 4;
    if (n === 0xffffffff) {
      at = from;
      return null;
    }
    at = from + n;
    if (field >= 1 && field <= 4) {
      const seen = seenBytes[field];
      if (seen && seen.length === n && seen.compare(p, from, from + n) === 0) return seenText[field]!;
      seenBytes[field] = Buffer.from(p.subarray(from, from + n));
      seenText[field] = p.toString('utf8', from, from + n);
      return seenText[field]!;
    }
    return p.toString('utf8', from, from + n);
  };
  /** Past the tensor pack at `at`: its end. */
  const packEnd = (p: Buffer): number => {
    let e = at;
    const count = p[e++]!;
    for (let t = 0; t < count; t++) {
      e += 4 + p.readUInt32LE(e);
      const rank = p[e + 1]!;
      e += 2 + 4 * rank;
      e += 4 + p.readUInt32LE(e);
    }
    return e;
  };
  const insertRow = (rowid: bigint | null, p: Buffer) => {
    at = STRINGS_OFFSET;
    const requestId = text(p, 0);
    const route = text(p, 1);
    const model = text(p, 2);
    const version = text(p, 3);
    const sha = text(p, 4);
    const client = text(p, 5);
    const key = text(p, 6);
    const inputAt = at;
    at = packEnd(p);
    const outputAt = at;
    const end = packEnd(p);
    insert!.run(
      rowid,
      p.subarray(ID_OFFSET, ID_OFFSET + 16),
      Math.round(p.readDoubleLE(8)),
      requestId,
      route,
      model,
      version,
      sha,
      p.readUInt32LE(4),
      p.readFloatLE(16),
      CACHE_TEXT[p[1]!] ?? null,
      p.readUInt16LE(2),
      client,
      key,
      p.subarray(inputAt, outputAt),
      p.subarray(outputAt, end),
    );
  };
  return {
    kind: 'sqlite',
    async connect() {
      if (db) return;
      const d = new Database(opts.path);
      d.pragma('journal_mode = WAL');
      d.pragma('synchronous = NORMAL');
      d.pragma('busy_timeout = 5000');
      d.exec(SQLITE_SCHEMA_SQL);
      insert = d.prepare(
        `INSERT INTO ${AUDIT_TABLE} (rowid, ${AUDIT_COLUMNS.join(', ')}) VALUES (?, ${AUDIT_COLUMNS.map(() => '?').join(', ')})`,
      );
      const sameId = d.prepare(`SELECT id FROM ${AUDIT_TABLE} WHERE rowid = ?`).pluck();
      progressStmt = d.prepare(
        `INSERT INTO ${PROGRESS_TABLE} (writer, segment, "offset", at) VALUES (?, ?, ?, ?)
         ON CONFLICT (writer) DO UPDATE SET segment = excluded.segment, "offset" = excluded."offset", at = excluded.at`,
      );
      tx = d.transaction((payloads: readonly Uint8Array[], to: Position, writer: string) => {
        for (const payload of payloads) {
          const p = payload as Buffer; // views into the Buffer the log was read into
          // The id's first 64 bits, big-endian: this record's rowid (see SQLITE_SCHEMA_SQL).
          const rowid = p.readBigInt64BE(ID_OFFSET);
          try {
            insertRow(rowid, p);
          } catch (err) {
            if ((err as { code?: string }).code !== 'SQLITE_CONSTRAINT_PRIMARYKEY') throw err;
            // The same record again (a position lost with a store): written once. Another record under
            // that rowid (ids from a clock that stepped back across a restart): kept, under the next rowid.
            const there = sameId.get(rowid) as Uint8Array;
            if (p.compare(there, 0, 16, ID_OFFSET, ID_OFFSET + 16) === 0) continue;
            insertRow(null, p);
          }
        }
        progressStmt!.run(writer, to.segment, to.offset, Date.now());
      });
      db = d;
    },
    async progress(writer) {
      const r = db!.prepare(`SELECT segment, "offset" FROM ${PROGRESS_TABLE} WHERE writer = ?`).get(writer) as
        | { segment: number; offset: number }
        | undefined;
      return r ? { segment: Number(r.segment), offset: Number(r.offset) } : undefined;
    },
    async write(payloads, to, writer) {
      tx!(payloads, to, writer);
    },
    async skip(to, writer) {
      progressStmt!.run(writer, to.segment, to.offset, Date.now());
    },
    async retain(days) {
      const cutoff = Date.now() - days * 86_400_000;
      let dropped = 0;
      // In slices: one large delete would hold the writer (and the file's write lock) for seconds.
      for (;;) {
        const r = db!
          .prepare(
            `DELETE FROM ${AUDIT_TABLE} WHERE rowid IN (SELECT rowid FROM ${AUDIT_TABLE} WHERE time < ? LIMIT 5000)`,
          )
          .run(cutoff);
        dropped += r.changes;
        if (r.changes < 5000) return dropped;
        await new Promise((resolve) => setImmediate(resolve));
      }
    },
    async close() {
      db?.close();
      db = undefined;
    },
  };
}
