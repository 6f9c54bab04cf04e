/**
 * The audit log against failures that do not refuse: a database that stops answering (through a TCP proxy
 * the test holds, so the machine's Postgres keeps running), a spool of very large records, and a full disk.
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type AuditRecord, toAuditJson } from '../src/core/audit.js';
import { startMain } from './main-process.js';
import { client, json, startTestServer } from './server.js';
import { createProxy, freshDatabase } from './services.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
      let n = 0;
      let ok = 0;
      let stop = false;
      const loop = async () => {
        while (!stop) {
          const i = n++;
          const res = await api
            .post('/predict', { features: [i % 70, 30, 100 + i, 12, 2, 1, 3], request_id: `hung-${i}` })
            .catch(() => undefined);
          if (res?.status === 200) ok++;
        }
      };
      const load = Promise.all(Array.from({ length: 8 }, loop));
      await sleep(1000);
      const okBeforeHold = ok;
      proxy.hold();
      if (noticed) {
        // Within the store timeout (plus a flush), health says so, and records go to the spool.
        await expect
          .poll(async () => (await json(await api.get('/health'))).database_connected, { timeout: 6000 })
          .toBe(false);
        await expect
          .poll(async () => (await json(await api.get('/health'))).audit_spool_rows, { timeout: 6000 })
          .toBeGreaterThan(0);
      }
      await sleep(300);
      const signalled = performance.now();
      server.child.kill('SIGTERM');
      const code = await server.exited;
      const shutdownTook = performance.now() - signalled;
      stop = true;
      await load;
      console.log(
        `${when}: ${ok} answered, SIGTERM to exit ${Math.round(shutdownTook)} ms (limit ${shutdownMs})`,
      );
      expect(code).toBe(0);
      expect(shutdownTook).toBeLessThan(shutdownMs + 1000);
      expect(ok).toBeGreaterThan(okBeforeHold);
      if (!noticed) expect(server.output()).toMatch(/did not answer before the shutdown deadline: spooling/);
      proxy.close();

      // A restart with the database back replays the spool: every answered prediction, once.
      const again = startMain({ AUDIT: 'on', DATABASE_URL: db.url }, auditDir);
      const api2 = client(await again.url);
      await expect
        .poll(async () => (await json(await api2.get('/health'))).audit_spool_rows, { timeout: 20_000 })
        .toBe(0);
      again.child.kill('SIGTERM');
      expect(await again.exited).toBe(0);
      const rows = await db.query(
        "SELECT count(*)::int AS n, count(DISTINCT request_id)::int AS d FROM prediction_audit WHERE request_id LIKE 'hung-%'",
      );
      expect(rows.rows[0]).toEqual({ n: ok, d: ok });
      await db.drop();
    });
  }
});

describe('a spool of very large records', () => {
  it('replays in bounded statements and bounded memory: no jsonb size limit, every record written', async () => {
    const db = await freshDatabase('bigspool');
    const dir = mkdtempSync(join(tmpdir(), 'audit-big-'));
    mkdirSync(join(dir, 'spool'));
    // 36 records of ~8 MB each (a large /predict/batch request's input): 290 MB, over Postgres's 256 MB
    // limit for one jsonb value, which the old replay (1,000 records as one parameter) hit on every retry.
    const rows = Array.from({ length: 8000 }, (_, r) =>
      Array.from({ length: 64 }, (_, k) => ((r * 64 + k) % 997) / 7),
    );
    const input = { model: 'mlp-large', instances: rows };
    const count = 36;
    const spoolFile = join(dir, 'spool', 'audit-spool.jsonl');
    let total = 0;
    for (let i = 0; i < count; i++) {
      const record: AuditRecord = {
        id: crypto.randomUUID(),
        request_id: `big-${i}`,
        time: new Date().toISOString(),
        route: '/predict/batch',
        model: 'mlp-large',
        model_version: '1',
        model_sha256: 'x',
        input,
        output: [],
        rows: rows.length,
        latency_ms: 1,
        cache: null,
        status: 200,
        client_id: null,
        api_key: null,
      };
      const line = `${toAuditJson(record)}\n`;
      appendFileSync(spoolFile, line);
      total += line.length;
    }
    expect(total).toBeGreaterThan(256 * 1024 * 1024);
    // Replayed by a process whose heap may not pass 160 MB: the spool is nearly twice that.
    const replay = spawnSync(
      process.execPath,
      ['--max-old-space-size=160', join(import.meta.dirname, 'fixtures', 'replay-spool.mjs'), dir, db.url],
      { encoding: 'utf8', timeout: 170_000 },
    );
    expect(replay.status, replay.stderr).toBe(0);
    const result = JSON.parse(replay.stdout.trim().split('\n').pop()!);
    console.log(
      `replayed ${count} records, ${Math.round(total / 2 ** 20)} MiB of spool, heap peak ${result.peakHeapMiB} MiB`,
    );
    expect(result).toMatchObject({ before: count, after: 0, connected: true });
    const written = await db.query(
      "SELECT count(*)::int AS n FROM prediction_audit WHERE request_id LIKE 'big-%'",
    );
    expect(written.rows[0].n).toBe(count);
    await db.drop();
  }, 180_000);
});

describe('a full disk under the spool', () => {
  it('keeps serving, and counts the records it could not keep (never silently)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'audit-full-'));
    const proxy = await createProxy(5432);
    await proxy.cut(); // no database: every record heads for the spool
    const server = await startTestServer({
      AUDIT: 'on',
      AUDIT_DIR: dir,
      DATABASE_URL: `postgresql://postgres@127.0.0.1:${proxy.port}/test`,
      AUDIT_FLUSH_MS: '50',
      AUDIT_STORE_TIMEOUT_MS: '500',
    });
    // Once it runs, the spool file becomes /dev/full: every append fails with ENOSPC, from the kernel.
    symlinkSync('/dev/full', join(dir, 'spool', 'audit-spool.jsonl'));
    try {
      const answers = await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          server.post('/predict', { features: [i, 30, 100, 12, 2, 1, 3] }),
        ),
      );
      expect(answers.map((r) => r.status)).toEqual(Array(40).fill(200));
      await expect
        .poll(async () => (await json(await server.get('/health'))).audit_dropped_rows, { timeout: 8000 })
        .toBe(40);
      const metrics = await (await server.get('/metrics')).text();
      expect(metrics).toMatch(/^onnxserve_audit_dropped_total\{reason="spool_failed"\} 40$/m);
      // And it goes on serving.
      expect((await server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7] })).status).toBe(200);
    } finally {
      await server.close();
      proxy.close();
    }
  });
});
