/**
 * Reading the audit log back over HTTP, against the real Postgres and the embedded SQLite file: "what did we
 * tell this customer?"
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKey, keyDigestHex, keyLine } from '../src/core/access.js';
import { client, json, startTestServer } from './server.js';
import { freshDatabase } from './services.js';

// The audit log holds every input: reading it takes a key with the admin scope.
const ADMIN_KEY = generateKey();
const API_KEYS = keyLine('auditor', ['admin'], keyDigestHex(ADMIN_KEY));
const asAdmin = { authorization: `Bearer ${ADMIN_KEY}` };

for (const store of ['postgres', 'sqlite'] as const) {
  describe(`the audit log in ${store}`, () => {
    let server: Awaited<ReturnType<typeof startTestServer>>;
    let db: Awaited<ReturnType<typeof freshDatabase>> | undefined;
    beforeAll(async () => {
      if (store === 'postgres') db = await freshDatabase('auditread');
      const where: Record<string, string> = db
        ? { DATABASE_URL: db.url }
        : { AUDIT_DIR: mkdtempSync(join(tmpdir(), 'audit-read-')) };
      server = await startTestServer({ AUDIT: 'on', ...where, AUDIT_FLUSH_MS: '20', API_KEYS });
      Object.assign(server, client(server.url, asAdmin));
      await server.audit!.ready;
      if (!server.audit!.status().database_connected) throw new Error(`the ${store} store did not connect`);
    });
    afterAll(async () => {
      await server?.close();
      await db?.drop();
    });

    describe('GET /audit', () => {
      it('finds a customer’s predictions by request id, with the model version that answered and what it said', async () => {
        const features = {
          tenure_months: 3,
          monthly_charges: 99,
          total_charges: 297,
          contract_length: 1,
          num_products: 1,
          support_tickets: 6,
          satisfaction_score: 1.5,
        };
        const before = new Date(Date.now() - 1000).toISOString();
        const v1 = await json(
          await server.post('/predict', {
            features,
            model: 'churn',
            version: '1',
            request_id: 'customer-42',
          }),
        );
        const v2 = await json(await server.post('/predict', { features, request_id: 'customer-42' }));
        await json(await server.post('/predict', { features, request_id: 'customer-7' }));
        await expect
          .poll(async () => (await json(await server.get('/audit?request_id=customer-42'))).count, {
            timeout: 5000,
          })
          .toBe(2);
        const found = await json(await server.get('/audit?request_id=customer-42'));
        // Newest first, summaries only unless asked.
        expect(found.records.map((r: { model_version: string }) => r.model_version)).toEqual(['2', '1']);
        for (const r of found.records) {
          expect(r.model).toBe('churn');
          expect(r.status).toBe(200);
          expect(r.input).toBeUndefined();
          expect(Date.parse(r.time)).toBeGreaterThanOrEqual(Date.parse(before));
        }
        const whole = await json(await server.get(`/audit/${found.records[1].id}`));
        expect(whole.input).toEqual(features);
        expect(whole.output.probability).toBeCloseTo(v1.probability, 4);
        expect(whole.model_sha256).toMatch(/^[0-9a-f]{64}$/);
        const withIo = await json(await server.get('/audit?request_id=customer-42&include_io=true'));
        expect(withIo.records[0].output.probability).toBeCloseTo(v2.probability, 4);
        // By model and version, within a time window.
        const byVersion = await json(
          await server.get(`/audit?model=churn&version=1&since=${encodeURIComponent(before)}`),
        );
        expect(byVersion.records.every((r: { model_version: string }) => r.model_version === '1')).toBe(true);
        expect(byVersion.count).toBeGreaterThanOrEqual(1);
        const future = await json(
          await server.get('/audit?request_id=customer-42&since=2999-01-01T00:00:00Z'),
        );
        expect(future.count).toBe(0);
        expect((await json(await server.get('/audit?limit=1'))).count).toBe(1);
      });

      it('refuses bad queries naming the field, and answers 404 for an unknown id', async () => {
        for (const [query, field] of [
          ['since=yesterday', 'since'],
          ['until=2026-13-45T00:00:00Z', 'until'],
          ['limit=0', 'limit'],
          ['limit=5000', 'limit'],
          ['include_io=yes', 'include_io'],
          [`request_id=${'x'.repeat(201)}`, 'request_id'],
          // Values Postgres cannot take were a 503 "unavailable" from a healthy store (found by probing).
          ['request_id=a%00b', 'request_id'],
          ['model=churn%00', 'model'],
          ['since=0000-01-01T00:00:00Z', 'since'],
          ['until=0000-02-29T00:00:00Z', 'until'],
        ] as const) {
          const res = await server.get(`/audit?${query}`);
          expect(res.status, query).toBe(422);
          expect((await json(res)).error.field, query).toBe(field);
        }
        // A huge limit is told the bound there is, not the largest integer JavaScript keeps exact.
        const huge = await json(await server.get('/audit?limit=99999999999999999999'));
        expect(huge.error.message).toMatch(/1000/);
        expect(huge.error.message).not.toMatch(/9007199254740991/);
        const notUuid = await server.get('/audit/not-a-uuid');
        expect(notUuid.status).toBe(422);
        expect((await json(notUuid)).error.field).toBe('id');
        const unknown = await server.get('/audit/00000000-0000-4000-8000-000000000000');
        expect(unknown.status).toBe(404);
        expect((await json(unknown)).error).toMatchObject({ code: 'ERR_NOT_FOUND', field: 'id' });
        // A hostile request id is a parameter, never SQL.
        const hostile = await server.get(`/audit?request_id=${encodeURIComponent("x' OR '1'='1")}`);
        expect(hostile.status).toBe(200);
        expect((await json(hostile)).count).toBe(0);
      });
    });

    describe('large records', () => {
      it('an include_io page stops at 2 MiB of stored inputs and outputs and says it was cut short', async () => {
        // Seven batch records of 9,000 rows (0.86 MB stored each, 6 MB in all; ~5 MB of JSON each): a page holds
        // the ones within 2 MiB, and says so.
        const instances = Array.from({ length: 9000 }, (_, r) =>
          Array.from({ length: 20 }, (_, k) => ((r * 20 + k) % 977) / 3.7),
        );
        for (let i = 0; i < 7; i++) {
          const res = await server.post('/predict/batch', {
            model: 'fraud',
            instances,
            use_cache: false,
            request_id: 'large-io',
          });
          expect(res.status).toBe(200);
        }
        await expect
          .poll(async () => (await json(await server.get('/audit?request_id=large-io'))).count, {
            timeout: 10_000,
          })
          .toBe(7);
        const page = await json(await server.get('/audit?request_id=large-io&include_io=true'));
        expect(page.truncated).toBe(true);
        expect(page.count).toBeGreaterThan(0);
        expect(page.count).toBeLessThan(7);
        expect(page.records[0].input).toHaveLength(9000);
        const one = await json(await server.get('/audit?request_id=large-io&include_io=true&limit=1'));
        expect(one).toMatchObject({ count: 1, truncated: false });
        expect(one.records[0].bytes_before).toBeUndefined();
      });
    });
  });
}

describe('without a readable store', () => {
  it('answers 503 ERR_AUDIT_UNAVAILABLE with Retry-After', async () => {
    const off = await startTestServer({ AUDIT: 'off', API_KEYS });
    Object.assign(off, client(off.url, asAdmin));
    try {
      const res = await off.get('/audit?request_id=x');
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      expect((await json(res)).error.code).toBe('ERR_AUDIT_UNAVAILABLE');
    } finally {
      await off.close();
    }
  });
});
