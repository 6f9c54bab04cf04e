/**
 * Hot reload with zero failed requests, on the server as `npm start` runs it (a child process, so its RSS
 * can be read), over a temporary copy of the shipped models: versions reloaded through the seed routes and
 * the Triton repository API, copied into MODELS_DIR and deleted from it (the watcher), another model
 * unloaded and loaded again, all while clients keep sending predictions; a corrupt model.onnx that is not
 * loaded; a model.json change that refreshes metadata without restarting a worker; memory over 50 reloads.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKey, keyDigestHex, keyLine } from '../src/core/access.js';
import { startMain } from './main-process.js';
import { MODELS_DIR } from './reference.js';
import { client, json } from './server.js';

const ADMIN_KEY = generateKey();
const PREDICT_KEY = generateKey();
const API_KEYS = [
  keyLine('ops', ['admin'], keyDigestHex(ADMIN_KEY)),
  keyLine('scorer', ['predict'], keyDigestHex(PREDICT_KEY)),
].join('\n');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A fresh copy of the shipped models. */
function modelsCopy() {
  const dir = mkdtempSync(join(tmpdir(), 'models-'));
  cpSync(MODELS_DIR, dir, { recursive: true });
  return dir;
}

type Main = ReturnType<typeof startMain>;

async function start(env: Record<string, string>) {
  const main = startMain({ POOL_SIZE: '2', CACHE: 'off', API_KEYS, DEFAULT_MODEL: 'churn', ...env });
  const url = await main.url;
  return { main, url, api: client(url), admin: client(url, { 'x-api-key': ADMIN_KEY }) };
}

async function stop(main: Main | undefined) {
  if (!main) return;
  if (process.env.DEBUG_RELOAD) console.log(main.output());
  main.child.kill('SIGTERM');
  await main.exited;
}

/** The server process's resident memory, in MB (its worker threads included: they share the process). */
const rssMb = (pid: number) =>
  Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

/** Worker threads that have ever run in the server: each pool swap starts new ones. */
async function workerIds(url: string): Promise<string[]> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return [...text.matchAll(/^onnxserve_pool_busy_seconds_total\{worker="(\d+)"\}/gm)]
    .map((m) => m[1]!)
    .sort();
}

/** The versions of `name` that serve now. */
async function versionsOf(api: ReturnType<typeof client>, name: string): Promise<string[]> {
  const list = await json(await api.get('/models'));
  return list.models.find((m: { name: string }) => m.name === name)?.versions ?? [];
}

async function until(what: string, check: () => Promise<boolean>, ms = 8000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(50);
  }
}

/**
 * Clients sending /predict for churn in `loops` concurrent loops. Versions `initially` may answer, and
 * `allow` sets which may answer a request sent from now on (a request sent mid-change may see either side).
 */
function loadLoops(url: string, loops: number, ...initially: string[]) {
  let stopped = false;
  let allowed = new Set(initially);
  const failures: string[] = [];
  let sent = 0;
  let ok = 0;
  const seen = new Map<string, number>();
  const loop = async () => {
    while (!stopped) {
      const may = allowed;
      const features = Array.from({ length: 7 }, () => Math.round(Math.random() * 100));
      sent++;
      try {
        const res = await fetch(`${url}/predict`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'churn', features }),
        });
        const body = await json(res);
        if (res.status !== 200) failures.push(`${res.status} ${JSON.stringify(body)}`);
        else if (!may.has(body.model_version)) {
          failures.push(`version ${body.model_version}, allowed ${[...may]}`);
        } else {
          ok++;
          seen.set(body.model_version, (seen.get(body.model_version) ?? 0) + 1);
        }
      } catch (err) {
        failures.push(String((err as { cause?: unknown }).cause ?? err));
      }
    }
  };
  const running = Array.from({ length: loops }, loop);
  return {
    allow(...versions: string[]) {
      allowed = new Set(versions);
    },
    get sent() {
      return sent;
    },
    async stop() {
      stopped = true;
      await Promise.all(running);
      return { sent, ok, failures, seen: Object.fromEntries(seen) };
    },
  };
}

describe('hot reload under load (watcher on)', () => {
  let server: Awaited<ReturnType<typeof start>>;
  let dir: string;
  beforeAll(async () => {
    dir = modelsCopy();
    server = await start({ MODELS_DIR: dir });
  });
  afterAll(async () => {
    await stop(server?.main);
    rmSync(dir, { recursive: true, force: true });
  });

  it('the seed reload routes are admin routes, answer as the seeds document, and name an unknown model', async () => {
    const { api, admin } = server;
    expect((await api.post('/model/reload', '')).status).toBe(401);
    expect((await api.post('/reload-model', '', { 'x-api-key': PREDICT_KEY })).status).toBe(403);
    // curl -X POST http://localhost:8000/model/reload: no body, no Content-Type.
    const seed000 = await fetch(`${server.url}/model/reload`, {
      method: 'POST',
      headers: { 'x-api-key': ADMIN_KEY },
    });
    expect(seed000.status).toBe(200);
    expect(await json(seed000)).toEqual({
      status: 'success',
      message: 'Model reloaded successfully',
      models: [{ name: 'churn', versions: ['1', '2'] }],
    });
    const seed002 = await admin.post('/reload-model', { model: 'iris' });
    expect(seed002.status).toBe(200);
    expect(await json(seed002)).toMatchObject({
      status: 'success',
      models: [{ name: 'iris', versions: ['1'] }],
    });
    const byQuery = await admin.post('/model/reload?model=fraud', '');
    expect((await json(byQuery)).models).toEqual([{ name: 'fraud', versions: ['1'] }]);
    for (const path of ['/model/reload', '/reload-model']) {
      const unknown = await admin.post(path, { model: 'nope' });
      expect(unknown.status).toBe(404);
      expect((await json(unknown)).error).toMatchObject({ code: 'ERR_MODEL_NOT_FOUND', field: 'model' });
    }
    const badBody = await admin.post('/model/reload', { model: 5 });
    expect(badBody.status).toBe(422);
    expect((await json(badBody)).error.field).toBe('model');
  });

  it('fails no request while versions are reloaded, copied in, deleted, and another model is unloaded and loaded', async () => {
    const { url, api, admin } = server;
    const churn2 = join(dir, 'churn', '2', 'model.onnx');
    const v1Bytes = readFileSync(join(dir, 'churn', '1', 'model.onnx'));
    const v2Bytes = readFileSync(churn2);
    const load = loadLoops(url, 4, '2');
    await sleep(300);
    const swaps: number[] = [];
    /** Rewrite churn 2's file and reload it through `route` at once (before the watcher's quiet period). */
    const reloadThrough = async (route: () => Promise<Response>, bytes: Buffer) => {
      const before = (await workerIds(url)).length;
      writeFileSync(churn2, bytes);
      const res = await route();
      expect(res.status).toBe(200);
      swaps.push((await workerIds(url)).length - before);
      await sleep(200);
    };
    await reloadThrough(() => admin.post('/model/reload', ''), v1Bytes);
    await reloadThrough(() => admin.post('/reload-model', { model: 'churn' }), v2Bytes);
    await reloadThrough(() => admin.post('/v2/repository/models/churn/load', {}), v1Bytes);
    // Each of the three started a new pool (two workers) under load.
    expect(swaps).toEqual([2, 2, 2]);
    writeFileSync(churn2, v2Bytes);

    // A new version copied in (file by file) serves within seconds.
    load.allow('2', '3');
    const copied = performance.now();
    cpSync(join(dir, 'churn', '2'), join(dir, 'churn', '3'), { recursive: true });
    await until('churn 3 serves', async () => (await versionsOf(api, 'churn')).includes('3'));
    const newVersionMs = Math.round(performance.now() - copied);
    load.allow('3');
    await sleep(300);

    // Deleted: the version before it serves again.
    load.allow('2', '3');
    rmSync(join(dir, 'churn', '3'), { recursive: true });
    await until('churn 3 gone', async () => !(await versionsOf(api, 'churn')).includes('3'));
    load.allow('2');
    await sleep(300);

    // Another model unloaded and loaded again: churn serves throughout.
    expect((await admin.post('/v2/repository/models/iris/unload', {})).status).toBe(200);
    expect((await api.get('/v2/models/iris/ready')).status).toBe(503);
    expect((await admin.post('/v2/repository/models/iris/load', {})).status).toBe(200);
    await sleep(300);

    const result = await load.stop();
    console.log(
      `reload under load: ${result.sent} requests sent, ${result.failures.length} failed; answered by version ${JSON.stringify(result.seen)}; a copied-in version served after ${newVersionMs} ms`,
    );
    expect(result.failures).toEqual([]);
    expect(result.sent).toBeGreaterThan(200);
    expect(result.seen['3']).toBeGreaterThan(0);
    expect(newVersionMs).toBeLessThan(5000);
  });

  it('does not load a corrupt model.onnx: the loaded versions keep serving and a warning is logged', async () => {
    const { url, api, main } = server;
    const load = loadLoops(url, 2, '2');
    const v2 = readFileSync(join(dir, 'churn', '2', 'model.onnx'));
    const bad = join(dir, 'churn', '7');
    cpSync(join(dir, 'churn', '2'), bad, { recursive: true });
    // Half of the file: as a copy cut short leaves it.
    writeFileSync(join(bad, 'model.onnx'), v2.subarray(0, v2.length >> 1));
    await until('a warning about churn', async () =>
      main
        .output()
        .split('\n')
        .some(
          (l) =>
            l.includes('"level":"warn"') &&
            l.includes('"msg":"model reload failed') &&
            l.includes('"model":"churn"'),
        ),
    );
    expect(await versionsOf(api, 'churn')).toEqual(['1', '2']);
    const index = await json(await fetch(`${url}/v2/repository/index`, { method: 'POST' }));
    expect(
      index.filter((m: { name: string }) => m.name === 'churn').map((m: { state: string }) => m.state),
    ).toEqual(['READY', 'READY']);
    rmSync(bad, { recursive: true });
    await sleep(1000);
    const result = await load.stop();
    expect(result.failures).toEqual([]);
    expect(result.ok).toBeGreaterThan(20);
    expect(await versionsOf(api, 'churn')).toEqual(['1', '2']);
  });

  it('a model.json change refreshes the metadata in place: no worker restarts', async () => {
    const { url, api } = server;
    const workers = await workerIds(url);
    const path = join(dir, 'churn', '2', 'model.json');
    const meta = JSON.parse(readFileSync(path, 'utf8'));
    writeFileSync(
      path,
      JSON.stringify({ ...meta, description: 'churn, now in production', stage: 'production' }),
    );
    await until('the new description', async () => {
      const detail = await json(await api.get('/models/churn'));
      return detail.versions.at(-1).description === 'churn, now in production';
    });
    await sleep(700); // any further reload the watcher would make has had its time
    expect(await workerIds(url)).toEqual(workers);
    // The same workers answer.
    expect(
      (await api.post('/predict', { model: 'churn', features: [24, 75.5, 1800, 12, 2, 1, 4.5] })).status,
    ).toBe(200);
  });

  it('a brand-new model directory loads; removing it unloads it', async () => {
    const { api } = server;
    cpSync(join(dir, 'iris'), join(dir, 'iris-b'), { recursive: true });
    await until('iris-b serves', async () => (await versionsOf(api, 'iris-b')).includes('1'));
    const res = await api.post('/predict', { model: 'iris-b', features: [5.1, 3.5, 1.4, 0.2] });
    expect(res.status).toBe(200);
    rmSync(join(dir, 'iris-b'), { recursive: true });
    await until('iris-b unloaded', async () => (await api.get('/v2/models/iris-b/ready')).status === 503);
  });
});

describe('memory over reload cycles (watcher off)', () => {
  let server: Awaited<ReturnType<typeof start>>;
  let dir: string;
  beforeAll(async () => {
    dir = modelsCopy();
    server = await start({ MODELS_DIR: dir, WATCH_MODELS: 'false' });
  });
  afterAll(async () => {
    await stop(server?.main);
    rmSync(dir, { recursive: true, force: true });
  });

  it('with WATCH_MODELS=false a copied version waits for a reload request', async () => {
    const { api, admin } = server;
    cpSync(join(dir, 'churn', '2'), join(dir, 'churn', '3'), { recursive: true });
    await sleep(1500);
    expect(await versionsOf(api, 'churn')).toEqual(['1', '2']);
    expect((await json(await admin.post('/model/reload', ''))).models).toEqual([
      { name: 'churn', versions: ['1', '2', '3'] },
    ]);
    rmSync(join(dir, 'churn', '3'), { recursive: true });
    expect((await json(await admin.post('/model/reload', ''))).models[0].versions).toEqual(['1', '2']);
  });

  /** RSS after each of the 50 reloads, in MB. */
  const rss: number[] = [];

  it('50 reloads under load, each a new pool: no request fails, and RSS is printed after each', async () => {
    const { url, admin, main } = server;
    const pid = main.child.pid!;
    const churn2 = join(dir, 'churn', '2', 'model.onnx');
    const bytes = [readFileSync(join(dir, 'churn', '1', 'model.onnx')), readFileSync(churn2)];
    const load = loadLoops(url, 2, '2');
    // The server's heap first grows to its working size under this traffic, reloads or not: the same load
    // with no reload grew RSS by 19-25 % over the time 50 reloads take (the main thread's old generation
    // filling with this traffic's garbage until V8 collects and shrinks it), and by as much as 50 reloads
    // with it. Measured from a cold start, the bound below would measure that warm-up, not the reloads.
    const warm = performance.now();
    while (load.sent < WARMUP_REQUESTS && performance.now() - warm < WARMUP_MAX_MS) await sleep(100);
    const warmRss = rssMb(pid);
    const workersBefore = (await workerIds(url)).length;
    for (let cycle = 0; cycle < 50; cycle++) {
      writeFileSync(churn2, bytes[cycle % 2]!);
      expect((await admin.post('/model/reload', '')).status).toBe(200);
      rss.push(rssMb(pid));
    }
    const result = await load.stop();
    // Every cycle swapped the pool: two new workers each.
    expect((await workerIds(url)).length - workersBefore).toBe(100);
    const [first, last] = [rss[0]!, rss.at(-1)!];
    console.log(`RSS by reload: ${rss.map((mb, i) => `${i + 1}: ${mb.toFixed(0)}`).join(', ')} MB`);
    console.log(
      `RSS after warm-up: ${warmRss.toFixed(1)} MB; after reload 1: ${first.toFixed(1)} MB, after reload 50: ${last.toFixed(1)} MB (${(((last - first) / first) * 100).toFixed(1)}%), max ${Math.max(...rss).toFixed(1)} MB; ${result.sent} requests, ${result.failures.length} failed`,
    );
    expect(result.failures).toEqual([]);
  }, 120_000);

  // Issue 11: RSS after 50 reload cycles within 20 % of RSS after the first. A pool or sessions kept per
  // reload (tens of MB each) fail it at once; what a reload leaves behind (onnxruntime's session creation,
  // about 0.15 MB a reload, levelling off after a few hundred) stays well inside it.
  it('RSS after 50 reloads stays within 20 % of RSS after the first', () => {
    expect(rss).toHaveLength(50);
    const [first, last] = [rss[0]!, rss.at(-1)!];
    expect(last).toBeLessThan(first * 1.2);
  });
});

/** Requests the memory test's clients send before the first reload (or WARMUP_MAX_MS, whichever is first). */
const WARMUP_REQUESTS = 5000;
const WARMUP_MAX_MS = 20_000;
