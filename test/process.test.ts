/** The server as `npm start` runs it: a real process, its environment and its signals. */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/node/config.js';
import { startMain as start } from './main-process.js';
import { client, json } from './server.js';
import { freshDatabase } from './services.js';

describe('process', () => {
  it('on SIGTERM stops accepting, finishes in-flight requests, closes the pool and exits 0', async () => {
    // Rows wait 400 ms for company, so the requests are still in flight when SIGTERM arrives.
    const server = start({ BATCH_MAX_DELAY_MS: '400' });
    const api = client(await server.url);
    const inFlight = Array.from({ length: 30 }, (_, i) =>
      api.post('/predict', { features: [i, 50, 600, 12, 2, 1, 3] }),
    );
    await new Promise((r) => setTimeout(r, 150));
    server.child.kill('SIGTERM');
    const answers = await Promise.all(inFlight);
    expect(answers.map((r) => r.status)).toEqual(Array(30).fill(200));
    expect((await json(answers[0]!)).model).toBe('churn');
    expect(await server.exited).toBe(0);
    expect(server.output()).toMatch(/"msg":"stopped"/);
    await expect(fetch(`${await server.url}/health/live`)).rejects.toThrow();
  });

  it('on SIGTERM under load, while a balancer still opens connections, no client sees a reset or loses its audit record; answers carry Connection: close', async () => {
    const db = await freshDatabase('drain');
    // A Kubernetes pod's endpoint is removed while the pod is signalled: until the balancers hear of it
    // (here: once their readiness probe fails), new connections keep coming. Closing the listener then would
    // reset those the kernel had completed and the server not yet accepted (requests already sent on them):
    // SHUTDOWN_DELAY_MS keeps it listening past that.
    const server = start({ AUDIT: 'on', DATABASE_URL: db.url, SHUTDOWN_DELAY_MS: '3000' });
    const url = await server.url;
    let stop = false;
    /** The balancer has dropped this server: a client told to close its connection goes elsewhere. */
    let dropped = false;
    let ok = 0;
    let closing = 0;
    let refused = 0;
    const broken: string[] = [];
    const body = JSON.stringify({ features: [1, 2, 3, 4, 5, 6, 7], use_cache: false });
    const loop = async () => {
      while (!stop) {
        try {
          const res = await fetch(`${url}/predict`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body,
          });
          await res.text();
          if (res.status === 200) ok++;
          else broken.push(`status ${res.status}`);
          if (res.headers.get('connection') === 'close') {
            closing++;
            if (dropped) return;
          }
        } catch (err) {
          const code = (err as { cause?: { code?: string } }).cause?.code;
          if (code === 'ECONNREFUSED') {
            refused++;
            await new Promise((r) => setTimeout(r, 5));
          } else broken.push(String(code ?? err));
        }
      }
    };
    // 50 keep-alive connections, each sending request after request; each reconnects when told to close.
    const loops = Array.from({ length: 50 }, loop);
    await new Promise((r) => setTimeout(r, 1000));
    const before = ok;
    const signalled = performance.now();
    server.child.kill('SIGTERM');
    // The balancer's readiness probe, on a new connection: accepted during the delay, and told the server is
    // not ready, upon which the balancer drops it.
    await new Promise((r) => setTimeout(r, 200));
    const readiness = await new Promise<number | undefined>((resolve, reject) =>
      get(`${url}/health/ready`, { agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode);
      }).on('error', reject),
    );
    dropped = true;
    const code = await server.exited;
    const exitMs = performance.now() - signalled;
    stop = true;
    await Promise.all(loops);
    expect(code).toBe(0);
    expect(broken).toEqual([]);
    // Load was flowing at SIGTERM (20 a second and more, even with both cores busy elsewhere).
    expect(before).toBeGreaterThan(20);
    expect(readiness).toBe(503);
    // Every client was answered after SIGTERM and told to close its connection; none was refused: the server
    // listened until the balancer had let it go.
    expect(closing).toBeGreaterThanOrEqual(50);
    expect(refused).toBe(0);
    // The delay was kept, and the whole shutdown stayed within SHUTDOWN_TIMEOUT_MS (10 s by default).
    expect(exitMs).toBeGreaterThan(3000);
    expect(exitMs).toBeLessThan(10_000);
    // Every answered prediction's record is in Postgres once the process has exited.
    expect((await db.query('SELECT count(*)::int AS n FROM prediction_audit')).rows[0].n).toBe(ok);
    await db.drop();
  });

  it('on SIGTERM while models are still loading, stops without waiting for them', async () => {
    // 48 workers each load every model: seconds of start-up on this machine.
    const server = start({ POOL_SIZE: '48' });
    await expect
      .poll(() => /"msg":"listening"/.test(server.output()), { timeout: 10_000, interval: 10 })
      .toBe(true);
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    // Before, shutdown waited for every worker to finish loading: "models ready" came first.
    expect(server.output()).toMatch(/"msg":"stopped"/);
    expect(server.output()).not.toMatch(/"msg":"models ready"/);
  });

  it('a second SIGTERM ends the drain at once, with exit code 1', async () => {
    // Rows wait a second for company: the first SIGTERM's drain has requests to wait for.
    const server = start({ BATCH_MAX_DELAY_MS: '1000' });
    const api = client(await server.url);
    const inFlight = Array.from({ length: 5 }, () =>
      api.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7] }).catch(() => undefined),
    );
    await new Promise((r) => setTimeout(r, 100));
    server.child.kill('SIGTERM');
    // Past the 250 ms within which two signals count as one (Ctrl-C under npm arrives twice).
    await new Promise((r) => setTimeout(r, 400));
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(1);
    expect(server.output()).toMatch(/second signal/);
    expect(server.output()).not.toMatch(/"msg":"stopped"/);
    await Promise.all(inFlight);
  });

  for (const kind of ['exception', 'rejection'] as const) {
    it(`a fatal ${kind} is logged, in-flight requests are answered and audited, then exit 1`, async () => {
      const db = await freshDatabase('fatal');
      const fixture = join(import.meta.dirname, 'fixtures', 'fatal-on-signal.mjs');
      // Rows wait 400 ms for company: the requests are in flight when the error strikes.
      const server = start(
        { AUDIT: 'on', DATABASE_URL: db.url, BATCH_MAX_DELAY_MS: '400', FATAL_KIND: kind },
        undefined,
        ['--import', fixture],
      );
      const api = client(await server.url);
      const inFlight = Array.from({ length: 12 }, (_, i) =>
        api.post('/predict', { features: [i, 50, 600, 12, 2, 1, 3], request_id: `fatal-${i}` }),
      );
      await new Promise((r) => setTimeout(r, 150));
      server.child.kill('SIGUSR2');
      const answers = await Promise.all(inFlight);
      expect(answers.map((r) => r.status)).toEqual(Array(12).fill(200));
      expect(await server.exited).toBe(1);
      const event = kind === 'exception' ? 'uncaughtException' : 'unhandledRejection';
      const logged = server
        .output()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l));
      expect(logged.find((l) => l.msg === event)?.error).toMatch(`injected fatal ${kind}`);
      expect(logged.some((l) => l.msg === 'stopped')).toBe(true);
      const audited = await db.query(
        "SELECT count(*)::int AS n FROM prediction_audit WHERE request_id LIKE 'fatal-%'",
      );
      expect(audited.rows[0].n).toBe(12);
      await db.drop();
    });
  }

  it('by default audits into the embedded SQLite store, with no database configured', async () => {
    const auditDir = mkdtempSync(join(tmpdir(), 'audit-'));
    const server = start({ AUDIT: 'on', DATABASE_URL: '' }, auditDir);
    const api = client(await server.url);
    await expect
      .poll(async () => (await json(await api.get('/health'))).database_connected, {
        timeout: 60_000,
        interval: 250,
      })
      .toBe(true);
    expect((await json(await api.get('/health'))).audit_store).toBe('sqlite');
    for (let i = 0; i < 5; i++)
      expect((await api.post('/predict', { features: [i, 1, 1, 1, 1, 1, 1] })).status).toBe(200);
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    const file = new Database(join(auditDir, 'audit.sqlite'), { readonly: true });
    expect(file.prepare('SELECT count(*) AS n FROM prediction_audit').get()).toEqual({ n: 5 });
    file.close();
  }, 90_000);

  it('refuses to start on an invalid setting, naming the variable', async () => {
    const server = start({ POOL_SIZE: 'lots', BATCH_MAX_DELAY_MS: '-1' });
    expect(await server.exited).toBe(2);
    expect(server.output()).toMatch(/POOL_SIZE="lots"/);
    expect(server.output()).toMatch(/BATCH_MAX_DELAY_MS="-1"/);
  });

  it('fails start-up with the path when MODELS_DIR does not exist', async () => {
    const server = start({ MODELS_DIR: '/nonexistent/models' });
    expect(await server.exited).toBe(1);
    expect(server.output()).toMatch(/MODELS_DIR \/nonexistent\/models does not exist/);
  });
});

/** Whether any process of the group is still alive. */
const groupAlive = (pgid: number) => {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('npm start', () => {
  const ROOT = join(import.meta.dirname, '..');

  /** `npm start` as a user runs it: its own process group, as a terminal would give it. */
  function npmStart() {
    const child = spawn('npm', ['start'], {
      cwd: ROOT,
      env: { ...process.env, PORT: '0', AUDIT: 'off', POOL_SIZE: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const url = new Promise<string>((resolve, reject) => {
      child.stdout.on('data', () => {
        const m = /"msg":"models ready"/.test(output) && /"url":"(http:[^"]+)"/.exec(output);
        if (m) resolve(m[1]!);
      });
      void exited.then((code) => reject(new Error(`npm start exited ${code}: ${output}`)));
    });
    return { child, url, exited, output: () => output };
  }

  for (const [how, signal, target] of [
    ['SIGTERM to the npm process (as a process manager sends it)', 'SIGTERM', 'npm'],
    ['Ctrl-C (SIGINT to the whole foreground group)', 'SIGINT', 'group'],
  ] as const) {
    it(`stops with the server behind it on ${how}`, async () => {
      const npm = npmStart();
      const pgid = npm.child.pid!;
      try {
        const url = await npm.url;
        expect((await fetch(`${url}/health/ready`)).status).toBe(200);
        process.kill(target === 'npm' ? pgid : -pgid, signal);
        await npm.exited;
        await expect.poll(() => groupAlive(pgid), { timeout: 10_000, interval: 100 }).toBe(false);
        await expect(fetch(`${url}/health/live`)).rejects.toThrow();
        expect(npm.output()).toMatch(/"msg":"stopped"/);
      } finally {
        if (groupAlive(pgid)) process.kill(-pgid, 'SIGKILL');
      }
    });
  }
});

describe('loadConfig', () => {
  it('fills defaults: shipped models, churn as default model, one pool thread per core', () => {
    const c = loadConfig({});
    expect(c.port).toBe(8000);
    expect(c.modelsDir).toBe(join(import.meta.dirname, '..', 'models'));
    expect(c.defaultModel).toBe('churn');
    expect(c.poolSize).toBeGreaterThanOrEqual(1);
    expect(c.batching.maxInFlight).toBe(c.poolSize);
  });

  it('treats empty variables as unset and a custom MODELS_DIR as having no default model', () => {
    const c = loadConfig({ PORT: '', MODELS_DIR: '/tmp/m', POOL_SIZE: '3' });
    expect(c.port).toBe(8000);
    expect(c.defaultModel).toBeUndefined();
    expect(c.batching.maxInFlight).toBe(3);
    // Blank is empty too: coerced, "  " would be the number 0 (a shadow never run, a port picked at random).
    const blank = loadConfig({ PORT: '  ', SHADOW_MAX_LOAD: ' ', HEAVY_YIELD_MS: '\t' });
    expect([blank.port, blank.shadowMaxLoad, blank.admission.heavyYieldMs]).toEqual([8000, 0.8, 20]);
  });

  it('refuses a shutdown delay that leaves the drain no time within SHUTDOWN_TIMEOUT_MS', () => {
    expect(loadConfig({ SHUTDOWN_DELAY_MS: '5000' }).shutdownDelayMs).toBe(5000);
    expect(loadConfig({}).shutdownDelayMs).toBe(0);
    expect(() => loadConfig({ SHUTDOWN_DELAY_MS: '10000' })).toThrow(
      /SHUTDOWN_DELAY_MS=10000: must be less than SHUTDOWN_TIMEOUT_MS=10000/,
    );
    expect(loadConfig({ SHUTDOWN_DELAY_MS: '0', SHUTDOWN_TIMEOUT_MS: '0' }).shutdownTimeoutMs).toBe(0);
  });
});
