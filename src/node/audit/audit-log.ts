import { type AuditRecord, type AuditSink, toAuditJson } from '../../core/audit.js';
import { type AuditStore, isDataError } from '../../core/audit-sql.js';
import type { DeadLetter } from './dead-letter.js';
import type { Spool } from './spool.js';

export interface AuditObserver {
  written(rows: number, seconds: number): void;
  failed(rows: number): void;
  deadLettered(rows: number): void;
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
  let queue: string[] = [];
  let overflow: string[] = [];
  let dbUp = false;
  let lastError: string | null = null;
  let flushing: Promise<void> | undefined;
  let recovering: Promise<void> | undefined;
  let closed = false;
  /** True until the first connection attempt ends: records wait in memory rather than go to the spool. */
  let starting = true;

  /**
   * Insert lines; when the store refuses them for their data, halve the batch until the refused records are
   * found, write the rest, and set those aside in the dead letter. An unreachable store throws.
   */
  const write = async (lines: readonly string[]): Promise<void> => {
    const started = performance.now();
    try {
      await store.insert(asArray(lines));
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
        const replayed = await spool.replay((lines) => write(lines));
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
        await spool.append(lines);
      }
      // Still connecting (PGlite's first start runs initdb): hold records rather than spool them all.
      if (!dbUp && starting && !closed && queue.length < opts.maxQueue) return;
      while (queue.length > 0) {
        const batch = queue.slice(0, opts.batchRows);
        queue = queue.slice(batch.length);
        if (dbUp) {
          try {
            await write(batch);
            continue;
          } catch (err) {
            down(err, batch.length);
          }
        }
        await spool.append(batch);
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
      if (queue.length >= opts.maxQueue) {
        overflow.push(line);
        if (overflow.length === 1) setImmediate(() => void flush());
        return;
      }
      queue.push(line);
      if (queue.length === opts.batchRows) setImmediate(() => void flush());
    },
  };

  return Object.assign(sink, {
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
      ...(lastError ? { audit_error: lastError } : {}),
    }),
    queueDepth: () => queue.length + overflow.length,
    spoolRows: () => spool.rows,
    /** Write or spool everything still held, then let go of the store. */
    async close() {
      closed = true;
      clearInterval(ticker);
      await recovering;
      await flush();
      if (dbUp && spool.rows > 0) await recover();
      await spool.sync();
      await store.close();
    },
  });
}

export type AuditLog = ReturnType<typeof createAuditLog>;
