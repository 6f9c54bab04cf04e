/**
 * The audit log against failures that do not refuse: a database that stops answering (through a TCP proxy
 * the test holds, so the machine's Postgres keeps running), a hard kill under load, a log of very large
 * records, and a full disk (a small tmpfs).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AuditRecord } from '../src/core/audit.js';
import { AuditChunkWriter } from '../src/core/audit-codec.js';
import { SegmentLog } from '../src/node/audit/segment-log.js';
import { startMain } from './main-process.js';
import { client, json, startTestServer } from './server.js';
import { createProxy, freshDatabase } from './services.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rssMb = (pid: number) =>
  Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

/** Clients sending /predict with request ids `${prefix}-N` until stopped; `answered` holds the ids seen 200. */
function loadLoops(api: ReturnType<typeof client>, prefix: string, loops: number) {
  const answered = new Set<string>();
  let n = 0;
  let stop = false;
  const loop = async () => {
    while (!stop) {
      const id = `${prefix}-${n++}`;
      const res = await api
        .post('/predict', { features: [n % 70, 30, 100 + n, 12, 2, 1, 3], request_id: id })
        .catch(() => undefined);
      if (res?.status === 200) answered.add(id);
      await res?.arrayBuffer().catch(() => {});
    }
  };
  const running = Promise.all(Array.from({ length: loops }, loop));
  return {
    answered,
    async stop() {
      stop = true;
      await running;
    },
  };
}

/** Request ids in the table with the prefix, and how many rows hold them (duplicates would differ). */
async function stored(db: Awaited<ReturnType<typeof freshDatabase>>, prefix: string) {
  const rows = (
    await db.query(`SELECT request_id FROM prediction_audit WHERE request_id LIKE '${prefix}-%'`)
  ).rows.map((r) => r.request_id as string);
  return { ids: new Set(rows), rows: rows.length };
}

describe('a database that stops answering', () => {
  for (const when of ['noticed before SIGTERM', 'SIGTERM while a write hangs'] as const) {
    it(`under load, ${when}: exit within the timeout, and every answered prediction reaches the table once`, async () => {
      const db = await freshDatabase('hung');
      const proxy = await createProxy(5432);
      const auditDir = mkdtempSync(join(tmpdir(), 'audit-hung-'));
      const url = db.url.replace(':5432/', `:${proxy.port}/`);
      const shutdownMs = 4000;
      const noticed = when === 'noticed before SIGTERM';
      const server = startMain(
        {
          AUDIT: 'on',
          DATABASE_URL: url,
          // Noticed: a short store timeout. Hanging: longer than the shutdown has, so close must give up.
          AUDIT_STORE_TIMEOUT_MS: noticed ? '1500' : '20000',
          SHUTDOWN_TIMEOUT_MS: String(shutdownMs),
          AUDIT_FLUSH_MS: '50',
        },
        auditDir,
      );
      const api = client(await server.url);
      const load = loadLoops(api, 'hung', 8);
      await sleep(1000);
      const beforeHold = load.answered.size;
      proxy.hold();
      if (noticed) {
        // Within the store timeout, health says so, and records wait in the log.
        await expect
          .poll(async () => (await json(await api.get('/health'))).database_connected, { timeout: 6000 })
          .toBe(false);
        await expect
          .poll(async () => (await json(await api.get('/health'))).audit_backlog_rows, { timeout: 6000 })
          .toBeGreaterThan(0);
      }
      await sleep(300);
      const signalled = performance.now();
      server.child.kill('SIGTERM');
      const code = await server.exited;
      const shutdownTook = performance.now() - signalled;
      await load.stop();
      const ok = load.answered.size;
      console.log(
        `${when}: ${ok} answered, SIGTERM to exit ${Math.round(shutdownTook)} ms (limit ${shutdownMs})`,
      );
      expect(code).toBe(0);
      expect(shutdownTook).toBeLessThan(shutdownMs + 1000);
      expect(ok).toBeGreaterThan(beforeHold);
      expect(server.output()).toMatch(/not yet in the store stay in the log for the next start/);
      proxy.close();

      // A restart with the database back writes the log's backlog: every answered prediction, once.
      const again = startMain({ AUDIT: 'on', DATABASE_URL: db.url }, auditDir);
      const api2 = client(await again.url);
      await expect
        .poll(async () => (await json(await api2.get('/health'))).audit_backlog_rows, { timeout: 20_000 })
        .toBe(0);
      again.child.kill('SIGTERM');
      expect(await again.exited).toBe(0);
      const { ids, rows } = await stored(db, 'hung');
      expect([...load.answered].filter((id) => !ids.has(id))).toEqual([]);
      expect(rows).toBe(ids.size);
      await db.drop();
    });
  }
});

describe('a hard kill', () => {
  it('SIGKILL under load, then a restart: lost records within the stated bound, none written twice', async () => {
    const db = await freshDatabase('killed');
    const auditDir = mkdtempSync(join(tmpdir(), 'audit-kill-'));
    const figures: string[] = [];
    let lostTotal = 0;
    let answeredTotal = 0;
    // Three kills of the same log: the records of each run, and of the runs before, each written once.
    for (let run = 0; run < 3; run++) {
      const server = startMain({ AUDIT: 'on', DATABASE_URL: db.url, AUDIT_FLUSH_MS: '50' }, auditDir);
      const api = client(await server.url);
      const load = loadLoops(api, `kill${run}`, 50);
      await sleep(2000);
      server.child.kill('SIGKILL');
      await server.exited;
      await load.stop();
      const again = startMain({ AUDIT: 'on', DATABASE_URL: db.url }, auditDir);
      const api2 = client(await again.url);
      await expect
        .poll(async () => (await json(await api2.get('/health'))).audit_backlog_rows, { timeout: 20_000 })
        .toBe(0);
      await expect.poll(async () => (await json(await api2.get('/health'))).database_connected).toBe(true);
      again.child.kill('SIGTERM');
      expect(await again.exited).toBe(0);
      const { ids, rows } = await stored(db, `kill${run}`);
      const lost = [...load.answered].filter((id) => !ids.has(id)).length;
      const rate = load.answered.size / 2;
      figures.push(`${load.answered.size} answered (${Math.round(rate)}/s), ${lost} lost, ${rows} rows`);
      expect(rows).toBe(ids.size); // none twice
      // The promise: a record answered more than AUDIT_CAPTURE_MS (10 ms) plus the log writer thread's wait
      // for a CPU before the kill is on disk. On a machine shared with the load generator and other tests
      // that wait reaches tens of ms: held here as 100 ms of this run's answers.
      expect(lost).toBeLessThanOrEqual(Math.ceil(rate * 0.1));
      lostTotal += lost;
      answeredTotal += load.answered.size;
    }
    console.log(
      `SIGKILL under 50 connections, three runs: ${figures.join('; ')}; lost ${lostTotal} of ${answeredTotal}`,
    );
    await db.drop();
  }, 180_000);
});

describe('a log of very large records', () => {
  it('is written in bounded batches and bounded memory: every record, no size limit hit', async () => {
    const db = await freshDatabase('biglog');
    const dir = mkdtempSync(join(tmpdir(), 'audit-big-'));
    // 100 records of 8,000 × 64 floats (a large /predict/batch request for mlp-large): 2 MB each, 200 MB in
    // all, left in the log by an earlier run whose database was down.
    const log = new SegmentLog(join(dir, 'log'), { segmentBytes: 64 * 1024 * 1024, maxBytes: 2 ** 31 });
    const rows = 8000;
    const data = Float32Array.from({ length: rows * 64 }, (_, k) => (k % 997) / 7);
    const count = 100;
    for (let i = 0; i < count; i++) {
      const record: AuditRecord = {
        request_id: `big-${i}`,
        time: Date.now() + i,
        route: '/predict/batch',
        model: 'mlp-large',
        model_version: '1',
        model_sha256: 'x'.repeat(64),
        input: { float_input: { type: 'float32', dims: [rows, 64], data } },
        output: { probabilities: { type: 'float32', dims: [rows, 2], data: new Float32Array(rows * 2) } },
        rows,
        latency_ms: 1,
        cache: null,
        status: 200,
        client_id: null,
        api_key: null,
      };
      const w = new AuditChunkWriter();
      w.write(record);
      const { buffer, bytes } = w.take();
      expect(log.append(new Uint8Array(buffer, 0, bytes))).toBe(1);
    }
    const logBytes = log.bytes;
    log.close();
    expect(logBytes).toBeGreaterThan(200 * 1024 * 1024);
    // Written by the server as `npm start` runs it, its RSS sampled all along.
    const server = startMain(
      { AUDIT: 'on', DATABASE_URL: db.url, AUDIT_BATCH_BYTES: String(8 * 1024 * 1024) },
      dir,
    );
    let peak = 0;
    const sampler = setInterval(() => {
      try {
        peak = Math.max(peak, rssMb(server.child.pid!));
      } catch {}
    }, 20);
    const api = client(await server.url);
    await expect
      .poll(async () => (await json(await api.get('/health'))).audit_backlog_rows, {
        timeout: 120_000,
        interval: 100,
      })
      .toBe(0);
    clearInterval(sampler);
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    const written = await db.query(
      "SELECT count(*)::int AS n, sum(octet_length(input))::bigint AS bytes FROM prediction_audit WHERE request_id LIKE 'big-%'",
    );
    console.log(
      `wrote ${count} records, ${Math.round(logBytes / 2 ** 20)} MiB of log; server RSS peak ${Math.round(peak)} MiB`,
    );
    expect(written.rows[0].n).toBe(count);
    expect(Number(written.rows[0].bytes)).toBeGreaterThan(count * rows * 64 * 4);
    // Holding the log would take its 200 MB on top of the server's ~150-200 MB.
    expect(peak).toBeLessThan(330);
    await db.drop();
  }, 180_000);
});

/** Mount a tmpfs of `size` at a new directory (as root, or through sudo); unmount() when done. */
function tmpfs(size: string) {
  const dir = mkdtempSync(join(tmpdir(), 'audit-tmpfs-'));
  const asRoot = process.getuid?.() === 0;
  const run = (args: string[]) =>
    asRoot ? execFileSync(args[0]!, args.slice(1)) : execFileSync('sudo', ['-n', ...args]);
  try {
    run(['mount', '-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  } catch (err) {
    throw new Error(`this test mounts a small tmpfs (as root, or with passwordless sudo): ${err}`);
  }
  return {
    dir,
    unmount() {
      run(['umount', dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('a full disk under the segment log', () => {
  it('keeps serving, and counts the records it could not keep (never silently)', async () => {
    const disk = tmpfs('256k');
    const proxy = await createProxy(5432);
    await proxy.cut(); // no database: every record stays in the log, which soon fills the disk
    mkdirSync(join(disk.dir, 'audit'));
    const server = await startTestServer({
      AUDIT: 'on',
      AUDIT_DIR: join(disk.dir, 'audit'),
      DATABASE_URL: `postgresql://postgres@127.0.0.1:${proxy.port}/test`,
      AUDIT_STORE_TIMEOUT_MS: '500',
    });
    try {
      let answered = 0;
      // ~300 bytes a record: 2,000 of them cannot fit in 256 KB.
      for (let i = 0; i < 40; i++) {
        const answers = await Promise.all(
          Array.from({ length: 50 }, (_, k) =>
            server.post('/predict', { features: [i, k, 100, 12, 2, 1, 3], use_cache: false }),
          ),
        );
        answered += answers.filter((r) => r.status === 200).length;
      }
      expect(answered).toBe(2000);
      // Every answered record is either in the log or counted as dropped, once the writer has taken them all.
      await expect
        .poll(
          async () => {
            const h = await json(await server.get('/health'));
            return h.audit_backlog_rows + h.audit_dropped_rows;
          },
          { timeout: 8000 },
        )
        .toBe(answered);
      const health = await json(await server.get('/health'));
      expect(health.audit_dropped_rows).toBeGreaterThan(0);
      const metrics = await (await server.get('/metrics')).text();
      const dropped = Number(
        /^onnxserve_audit_dropped_total\{reason="disk_full"\} (\d+)$/m.exec(metrics)?.[1],
      );
      console.log(
        `disk full: ${health.audit_backlog_rows} records kept in the log, ${dropped} dropped (counted) of ${answered}`,
      );
      expect(dropped).toBe(health.audit_dropped_rows);
      expect(health.audit_backlog_rows + dropped).toBe(answered);
      // And it goes on serving.
      expect((await server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7] })).status).toBe(200);
    } finally {
      await server.close();
      proxy.close();
      disk.unmount();
    }
  });
});
