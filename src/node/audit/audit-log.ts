import { type AuditReader, type AuditRecord, type AuditSink, toAuditJson } from '../../core/audit.js';
import { AUDIT_BY_ID_SQL, type AuditStore, auditSearchSql, isDataError } from '../../core/audit-sql.js';
import type { DeadLetter } from './dead-letter.js';
import type { Spool } from './spool.js';

export interface AuditObserver {
  written(rows: number, seconds: number): void;
  failed(rows: number): void;
  deadLettered(rows: number): void;
  /** Records lost, never silently: the spool could not take them (disk full) or its backlog was over bound. */
  dropped(rows: number, reason: 'spool_failed' | 'overflow'): void;
}

export interface AuditLogOptions {
  store: AuditStore;
  spool: Spool;
  deadLetter: DeadLetter;
  /** Records per INSERT. */
  batchRows: number;
  /** Flush at least this often (ms). */
  flushMs: number;
  /** Most records held in memory; past it, records go straight to the spool. */
  maxQueue: number;
  /** Most bytes of records held in memory (a record carries its request's input); past it, to the spool. */
  maxQueueBytes?: number;
  /** Most bytes in one insert: records of large requests go a few at a time. */
  batchBytes?: number;
  /** How often to try the database again while it is down (ms). */
  retryMs: number;
  observer?: AuditObserver;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

const asArray = (lines: readonly string[]) => `[${lines.join(',')}]`;

/**
 * Every answered prediction's record, written in batches and never awaited by the request. Records queue in
 * memory and go to the store by size or time; when the store fails they go to the spool, in order, and are
 * replayed once it answers again.
 */
export function createAuditLog(opts: AuditLogOptions) {
  const { store, spool, deadLetter, observer, log } = opts;
  const maxQueueBytes = opts.maxQueueBytes ?? 64 * 1024 * 1024;
  const batchBytes = opts.batchBytes ?? 8 * 1024 * 1024;
  let queue: string[] = [];
  let queueBytes = 0;
  let overflow: string[] = [];
  let overflowBytes = 0;
  /** Batches handed to the store and not yet answered: spooled at a shutdown that cannot wait for them. */
  const writing = new Set<readonly string[]>();
  let droppedRows = 0;
  let lastDropLog = 0;
  const dropped = (rows: number, reason: 'spool_failed' | 'overflow', err?: unknown) => {
    droppedRows += rows;
    observer?.dropped(rows, reason);
    // Said at most once a second: a full disk would otherwise log every flush.
    if (performance.now() - lastDropLog > 1000) {
      lastDropLog = performance.now();
      log?.('error', 'audit records dropped', {
        reason,
        rows,
        dropped_total: droppedRows,
        ...(err ? { error: String((err as Error)?.message ?? err) } : {}),
      });
    }
  };
  /** Append to the spool; when even that fails (disk full), count the records as dropped and go on. */
  const toSpool = async (lines: readonly string[]) => {
    try {
      await spool.append(lines);
    } catch (err) {
      dropped(lines.length, 'spool_failed', err);
    }
  };
  /** The next batch off the queue: at most batchRows records and batchBytes bytes (at least one record). */
  const takeBatch = (): string[] => {
    let n = 0;
    let bytes = 0;
    while (n < queue.length && n < opts.batchRows && (n === 0 || bytes + queue[n]!.length <= batchBytes)) {
      bytes += queue[n]!.length;
      n++;
    }
    const batch = queue.slice(0, n);
    queue = queue.slice(n);
    queueBytes -= bytes;
    return batch;
  };
  let dbUp = false;
  let lastError: string | null = null;
  let flushing: Promise<void> | undefined;
  let recovering: Promise<void> | undefined;
  let closed = false;
  /** True until the first connection attempt ends: records wait in memory rather than go to the spool. */
  let starting = true;
  /** Set when shutdown stopped waiting for the store: nothing more is sent to it. */
  let abandoned = false;

  /**
   * Insert lines; when the store refuses them for their data, halve the batch until the refused records are
   * found, write the rest, and set those aside in the dead letter. An unreachable store throws.
   */
  const write = async (lines: readonly string[]): Promise<void> => {
    const started = performance.now();
    try {
      writing.add(lines);
      try {
        await store.insert(asArray(lines));
      } finally {
        writing.delete(lines);
      }
    } catch (err) {
      if (!isDataError(err)) throw err;
      if (lines.length === 1) {
        const reason = String((err as Error).message);
        await deadLetter.append(lines[0]!, reason);
        observer?.deadLettered(1);
        log?.('warn', 'audit record refused by the store: set aside', {
          reason,
          dead_letter: deadLetter.path,
        });
        return;
      }
      const half = lines.length >> 1;
      await write(lines.slice(0, half));
      await write(lines.slice(half));
      return;
    }
    observer?.written(lines.length, (performance.now() - started) / 1000);
  };

  const down = (err: unknown, rows: number) => {
    const error = String((err as Error)?.message ?? err);
    if (dbUp) log?.('warn', 'audit store unavailable: spooling', { store: store.kind, error });
    // A store configured but unreachable from the start is said once, not found only in /health.
    else if (starting)
      log?.('warn', 'audit store unreachable at start: spooling until it answers', {
        store: store.kind,
        error,
      });
    dbUp = false;
    lastError = error;
    observer?.failed(rows);
  };

  /** Connect (or reconnect) and create the schema if the store was down, then replay the spool. */
  let lastAttempt = 0;
  const recover = () => {
    // The reset must run after the assignment, even when the body finishes at once: hence .finally.
    recovering ??= (async () => {
      lastAttempt = performance.now();
      try {
        if (!dbUp) await store.init();
        const replayed = await spool.replay((lines) => write(lines), opts.batchRows, batchBytes);
        if (!dbUp) log?.('info', 'audit store available', { store: store.kind, replayed });
        dbUp = true;
        lastError = null;
      } catch (err) {
        down(err, 0);
      }
    })().finally(() => {
      recovering = undefined;
      starting = false;
    });
    return recovering;
  };

  const flush = (): Promise<void> => {
    flushing ??= (async () => {
      if (overflow.length > 0) {
        const lines = overflow;
        overflow = [];
        overflowBytes = 0;
        await toSpool(lines);
      }
      // Still connecting (PGlite's first start runs initdb): hold records rather than spool them all.
      if (!dbUp && starting && !closed && queue.length < opts.maxQueue) return;
      while (queue.length > 0) {
        const batch = takeBatch();
        if (dbUp && !abandoned) {
          try {
            await write(batch);
            continue;
          } catch (err) {
            down(err, batch.length);
          }
        }
        await toSpool(batch);
      }
    })().finally(() => {
      flushing = undefined;
    });
    return flushing;
  };

  const ticker = setInterval(
    () => {
      // Down: try again every AUDIT_RETRY_MS. Up with a spool (records spooled while a replay ran): replay.
      const retryDue = performance.now() - lastAttempt >= opts.retryMs;
      if (!closed && ((!dbUp && retryDue) || (dbUp && spool.rows > 0))) void recover();
      void flush().catch((err) => log?.('error', 'audit flush failed', { error: String(err) }));
    },
    Math.min(opts.flushMs, opts.retryMs),
  );
  ticker.unref();
  const ready = recover();

  const sink: AuditSink = {
    record(r: AuditRecord) {
      const line = toAuditJson(r);
      if (queue.length >= opts.maxQueue || queueBytes + line.length > maxQueueBytes) {
        // The store is slow or gone: records go to disk. If even the spool falls a whole queue behind, the
        // disk cannot keep up: drop, counted, rather than hold requests' inputs in memory without bound.
        if (overflowBytes + line.length > maxQueueBytes) return dropped(1, 'overflow');
        overflow.push(line);
        overflowBytes += line.length;
        if (overflow.length === 1) setImmediate(() => void flush());
        return;
      }
      queue.push(line);
      queueBytes += line.length;
      if (queue.length === opts.batchRows || queueBytes >= batchBytes) setImmediate(() => void flush());
    },
  };

  /** Reads go to the store directly (records still queued or spooled are not there yet). */
  /** A store known to be down answers reads at once (503), rather than after its timeout. */
  const requireUp = () => {
    if (!dbUp) throw new Error(`the audit store is unavailable${lastError ? `: ${lastError}` : ''}`);
  };
  const reader: AuditReader = {
    async get(id) {
      requireUp();
      return (await store.query<Record<string, unknown>>(AUDIT_BY_ID_SQL, [id]))[0];
    },
    async search(q) {
      requireUp();
      const { sql, params } = auditSearchSql(q);
      return store.query<Record<string, unknown>>(sql, params);
    },
  };

  return Object.assign(sink, {
    reader,
    /** Resolves after the first connection attempt (and spool replay), whatever its outcome. */
    ready,
    flush,
    recover,
    status: () => ({
      database_connected: dbUp,
      audit_store: store.kind,
      audit_queue: queue.length + overflow.length,
      audit_spool_rows: spool.rows,
      audit_dead_letter_rows: deadLetter.rows,
      audit_dropped_rows: droppedRows,
      ...(lastError ? { audit_error: lastError } : {}),
    }),
    queueDepth: () => queue.length + overflow.length,
    spoolRows: () => spool.rows,
    /**
     * Write or spool everything still held, then let go of the store, within `timeoutMs`: a store that has
     * stopped answering is waited for only so long, then everything it still holds (the batches in flight
     * included) is spooled and fsynced. A batch both spooled and, late, written is replayed as a no-op
     * (inserts skip ids already present).
     */
    async close(timeoutMs = 10_000) {
      closed = true;
      clearInterval(ticker);
      const deadline = performance.now() + timeoutMs;
      const within = (p: Promise<unknown> | undefined) =>
        p === undefined
          ? Promise.resolve(true)
          : Promise.race([
              p.then(
                () => true,
                () => true,
              ),
              new Promise<boolean>((r) =>
                setTimeout(() => r(false), Math.max(0, deadline - performance.now())),
              ),
            ]);
      let finished = (await within(recovering)) && (await within(flush()));
      if (finished && dbUp && spool.rows > 0) finished = await within(recover());
      if (!finished) {
        abandoned = true;
        dbUp = false;
        const held = [...writing].flat().concat(queue, overflow);
        queue = [];
        overflow = [];
        queueBytes = 0;
        overflowBytes = 0;
        log?.('warn', 'audit store did not answer before the shutdown deadline: spooling what it held', {
          rows: held.length,
        });
        await toSpool(held);
      }
      await spool.sync();
      await within(store.close());
    },
  });
}

export type AuditLog = ReturnType<typeof createAuditLog>;
