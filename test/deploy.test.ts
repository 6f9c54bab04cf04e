/** Dockerfile, compose, Kubernetes and monitoring files agree with the code they deploy and observe. */
import { execFileSync, spawn } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { CONFIG_VARIABLES, loadConfig } from '../src/node/config.js';
import { heavyModel } from './heavy-model.js';
import { startPrometheus } from './prometheus.js';
import { startTestServer } from './server.js';

const ROOT = join(import.meta.dirname, '..');
const read = (p: string) => readFileSync(join(ROOT, p), 'utf8');
const DEFAULT_PORT = String(loadConfig({}).port);
const hasPromtool = (() => {
  try {
    execFileSync('promtool', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
if (process.env.CI && !hasPromtool)
  throw new Error('promtool (Debian package prometheus) is required in CI; .ci/run installs it');

let server: Awaited<ReturnType<typeof startTestServer>>;
let exported: Set<string>;
beforeAll(async () => {
  server = await startTestServer();
  await server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7] });
  await server.post('/predict', { model: 'nope', features: [1] });
  // A drift window's worth of rows, so the drift gauges report (DRIFT_MIN_ROWS).
  const rows = Array.from({ length: 1000 }, (_, i) => [
    1 + (i % 72),
    20 + (i % 100),
    500 + i,
    12,
    1 + (i % 5),
    i % 4,
    1 + (i % 5),
  ]);
  await server.post('/predict/batch', { model: 'churn', version: '2', instances: rows });
  const text = await (await server.get('/metrics')).text();
  exported = new Set([...text.matchAll(/^([a-z_:][a-z0-9_:]*)(?:\{| )/gm)].map((m) => m[1]!));
});
afterAll(() => server.close());

describe('Dockerfile', () => {
  const lines = read('Dockerfile').split('\n');
  it('exposes the port it sets, and the default port', () => {
    const expose = lines.find((l) => l.startsWith('EXPOSE'))!.split(/\s+/)[1];
    expect(read('Dockerfile')).toMatch(new RegExp(`PORT=${expose}\\b`));
    expect(expose).toBe(DEFAULT_PORT);
  });
  it('copies files that exist and starts the entry point the build produces', () => {
    for (const l of lines.filter((l) => l.startsWith('COPY') && !l.includes('--from'))) {
      for (const src of l.split(/\s+/).slice(1, -1)) expect(existsSync(join(ROOT, src)), src).toBe(true);
    }
    const cmd = JSON.parse(lines.find((l) => l.startsWith('CMD'))!.slice(3));
    expect(cmd[0]).toBe('node');
    expect(existsSync(join(ROOT, cmd[1]))).toBe(true);
    expect(read('Dockerfile')).toContain('/health/ready');
  });
  it('builds on a Node LTS still in support, within the range the package declares', () => {
    // Node 20 reached its end of life in April 2026; 22 and 24 are the LTS lines in support (Nov 2026).
    const majors = [...read('Dockerfile').matchAll(/^FROM node:(\d+)/gm)].map((m) => Number(m[1]));
    expect(majors.length).toBe(2);
    for (const major of majors) expect([22, 24]).toContain(major);
    const min = Number(/>=(\d+)/.exec(JSON.parse(read('package.json')).engines.node)![1]);
    expect(Math.min(...majors)).toBeGreaterThanOrEqual(min);
  });

  it('replayed in a clean directory holding only what it copies: builds, ships only the server, and serves', async () => {
    // No Docker engine here: run the Dockerfile's own COPY and RUN steps, stage by stage, in empty folders.
    const stages: { dir: string; steps: string[] }[] = [];
    for (const line of read('Dockerfile').replace(/\\\n/g, ' ').split('\n')) {
      if (line.startsWith('FROM'))
        stages.push({ dir: mkdtempSync(join(tmpdir(), 'docker-stage-')), steps: [] });
      else if (/^(COPY|RUN) /.test(line)) stages.at(-1)!.steps.push(line);
    }
    const [build, runtime] = stages as [(typeof stages)[0], (typeof stages)[0]];
    const replay = (stage: (typeof stages)[0]) => {
      for (const step of stage.steps) {
        const [op, ...args] = step.split(/\s+/);
        if (op === 'RUN') {
          if (step.includes('/data')) continue; // the image's data volume, not part of the app
          execFileSync('sh', ['-c', step.slice(4)], {
            cwd: stage.dir,
            stdio: 'pipe',
            env: { ...process.env, CI: 'true' },
          });
          continue;
        }
        const from = args[0]!.startsWith('--from=') ? build.dir : ROOT;
        const paths = args.filter((a) => !a.startsWith('--'));
        const dest = join(stage.dir, paths.at(-1)!);
        for (const src of paths.slice(0, -1)) {
          const source = join(from, src.replace(/^\/app\//, ''));
          const target = dest.endsWith('/') || paths.length > 2 ? join(dest, src.split('/').at(-1)!) : dest;
          cpSync(source, target, { recursive: true });
        }
      }
    };
    try {
      replay(build);
      replay(runtime);
      const shipped = execFileSync('find', ['dist', '-type', 'f'], { cwd: runtime.dir, encoding: 'utf8' })
        .trim()
        .split('\n');
      expect(shipped).toContain('dist/src/node/main.js');
      expect(shipped).toContain('dist/workers/onnx-worker.js');
      expect(shipped.filter((f) => /\.test\.|\.case\.|^dist\/test\/|training|scripts|bench/.test(f))).toEqual(
        [],
      );
      // No devDependency reached the image (yaml stays: @hono/zod-openapi needs it at run time).
      const runtimeNeeds = new Set(['yaml']);
      const devDeps = Object.keys(JSON.parse(read('package.json')).devDependencies).filter(
        (d) => !runtimeNeeds.has(d),
      );
      expect(devDeps.filter((d) => existsSync(join(runtime.dir, 'node_modules', d)))).toEqual([]);
      // Only this platform's native binaries (onnxruntime-node ships every platform's: 288 MB of them).
      const natives = (readdirSync(join(runtime.dir, 'node_modules'), { recursive: true }) as string[])
        .filter((f) => /\.(node|dylib|dll|exe)$|\.so(\.\d+)*$/.test(f))
        .map((f) => f.split(sep).join('/'));
      const ort = `onnxruntime-node/bin/napi-v6/linux/${process.arch}/`;
      expect(natives).toContain(`${ort}onnxruntime_binding.node`);
      expect(natives.filter((f) => /darwin|win32|\.(dylib|dll|exe)$/.test(f))).toEqual([]);
      expect(natives.filter((f) => f.startsWith('onnxruntime-node/') && !f.startsWith(ort))).toEqual([]);
      // And within budget: 357 MB before the platforms were cut.
      const kib = Number(
        execFileSync('du', ['-sk', 'node_modules'], { cwd: runtime.dir, encoding: 'utf8' }).split('\t')[0],
      );
      console.log(`image node_modules: ${(kib / 1024).toFixed(1)} MiB (du -sk)`);
      expect(kib).toBeLessThanOrEqual(120 * 1024);

      const child = spawn(process.execPath, ['dist/src/node/main.js'], {
        cwd: runtime.dir,
        env: {
          PATH: process.env.PATH,
          PORT: '0',
          HOST: '127.0.0.1',
          // The audit log and the default audit store, SQLite (a native addon compiled in the build stage).
          AUDIT_DIR: join(runtime.dir, 'audit'),
          AUDIT_FLUSH_MS: '50',
          POOL_SIZE: '1',
          NODE_ENV: 'production',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.on('data', (d) => (output += d));
      child.stderr.on('data', (d) => (output += d));
      try {
        await expect.poll(() => /"msg":"models ready"/.test(output), { timeout: 30_000 }).toBe(true);
        const url = /"url":"(http:[^"]+)"/.exec(output)![1]!;
        const res = await fetch(`${url}/predict`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ features: [5.1, 3.5, 1.4, 0.2] }),
        });
        expect(res.status).toBe(200);
        for (const asset of ['swagger-ui-bundle.js', 'redoc.standalone.js']) {
          expect((await fetch(`${url}/docs/assets/${asset}`)).status, asset).toBe(200);
        }
        const written = async () => {
          const text = await (await fetch(`${url}/metrics`)).text();
          return Number(/^onnxserve_audit_rows_written_total(?:\{[^}]*\})? (\S+)$/m.exec(text)?.[1] ?? 0);
        };
        await expect.poll(written, { timeout: 30_000, interval: 200 }).toBeGreaterThanOrEqual(1);
      } finally {
        // Let it drain and close the store before its folder is removed.
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        if (child.exitCode === null && child.signalCode === null)
          await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000))]);
      }
    } finally {
      for (const s of stages) rmSync(s.dir, { recursive: true, force: true });
    }
  }, 300_000);
});

describe('docker-compose.yml', () => {
  const compose = parse(read('docker-compose.yml'));
  it('sets only variables the server reads, points them at its own services, and publishes its port', () => {
    const env = compose.services.api.environment as Record<string, string>;
    expect(new URL(env.REDIS_URL!).host).toBe('redis:6379');
    const db = new URL(env.DATABASE_URL!);
    const pgEnv = compose.services.postgres.environment;
    expect([db.host, db.username, db.password, db.pathname]).toEqual([
      'postgres:5432',
      pgEnv.POSTGRES_USER,
      pgEnv.POSTGRES_PASSWORD,
      `/${pgEnv.POSTGRES_DB}`,
    ]);
    expect(compose.services.api.volumes.some((v: string) => v.endsWith(`:${env.AUDIT_DIR}`))).toBe(true);
    for (const k of Object.keys(env)) expect(CONFIG_VARIABLES, k).toContain(k);
    expect(compose.services.api.ports).toContain(`${env.PORT}:${env.PORT}`);
    expect(() => loadConfig(env)).not.toThrow();
  });
  it('publishes no Redis or Postgres port on the host; its documented override publishes them on loopback', () => {
    // A host's own Redis or Postgres already holds 6379 and 5432: the api reaches these on the network.
    expect(compose.services.redis.ports).toBeUndefined();
    expect(compose.services.postgres.ports).toBeUndefined();
    // The override its header comments show is valid compose YAML publishing the ports the api uses.
    const comment = read('docker-compose.yml')
      .split('\n')
      .filter((l) => l.startsWith('#   '))
      .map((l) => l.slice(1))
      .join('\n');
    const override = parse(comment);
    expect(Object.keys(override.services).sort()).toEqual(['postgres', 'redis']);
    const env = compose.services.api.environment as Record<string, string>;
    for (const [svc, url] of [
      ['redis', env.REDIS_URL!],
      ['postgres', env.DATABASE_URL!],
    ] as const) {
      const ports = override.services[svc].ports as string[];
      expect(ports.length, svc).toBe(1);
      expect(ports[0]!.startsWith('127.0.0.1:'), ports[0]).toBe(true);
      expect(ports[0]!.split(':').at(-1)).toBe(new URL(url).port);
    }
  });
  it('sends traces to its Jaeger over OTLP/HTTP, whose UI it publishes as seed 001 does', () => {
    const env = compose.services.api.environment as Record<string, string>;
    const tracing = loadConfig(env).tracing!;
    expect(new URL(tracing.url).host).toBe('jaeger:4318'); // Jaeger's OTLP/HTTP receiver
    expect(tracing.url.endsWith('/v1/traces')).toBe(true);
    expect(tracing.protocol).toBe('http/protobuf');
    const jaeger = compose.services.jaeger;
    expect(jaeger.image).toMatch(/^jaegertracing\/all-in-one:\d+\.\d+\.\d+$/);
    expect(jaeger.environment.COLLECTOR_OTLP_ENABLED).toBe('true');
    expect(jaeger.ports).toEqual(['16686:16686']);
    expect(Object.keys(compose.services.api.depends_on)).toContain('jaeger');
  });
  it('mounts files that exist (or named volumes it declares), and Prometheus scrapes the api on its port', () => {
    for (const svc of Object.values(compose.services) as { volumes?: string[] }[]) {
      for (const v of svc.volumes ?? []) {
        const source = v.split(':')[0]!;
        if (source.startsWith('.')) expect(existsSync(join(ROOT, source)), v).toBe(true);
        else expect(Object.keys(compose.volumes), v).toContain(source);
      }
    }
    const prom = parse(read('monitoring/prometheus.yml'));
    expect(prom.scrape_configs[0].static_configs[0].targets).toEqual([
      `api:${compose.services.api.environment.PORT}`,
    ]);
  });
});

describe('deploy/k8s', () => {
  const docs = ['deployment.yaml', 'service.yaml', 'hpa.yaml'].flatMap((f) =>
    parseAllDocuments(read(`deploy/k8s/${f}`)).map((d) => d.toJS()),
  );
  const deployment = docs.find((d) => d.kind === 'Deployment');
  const container = deployment.spec.template.spec.containers[0];
  const env = Object.fromEntries(
    container.env.map((e: { name: string; value: string }) => [e.name, e.value]),
  );
  it('uses variables the server reads and a container port equal to PORT', () => {
    for (const k of Object.keys(env)) expect(CONFIG_VARIABLES, k).toContain(k);
    // The keys file is the secret's, mounted in the pod: a file of the same shape here.
    const keysFile = join(mkdtempSync(join(tmpdir(), 'keys-')), 'api-keys');
    writeFileSync(keysFile, `ci:predict:${'ab'.repeat(32)}\n`);
    expect(() => loadConfig({ ...env, API_KEYS_FILE: keysFile })).not.toThrow();
    expect(String(container.ports[0].containerPort)).toBe(env.PORT);
    expect(deployment.spec.template.metadata.annotations['prometheus.io/port']).toBe(env.PORT);
  });
  it('probes routes that answer 200 on a ready server', async () => {
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      const res = await server.get(container[probe].httpGet.path);
      expect(res.status, probe).toBe(200);
    }
  });
  it('gives the pool no more threads than the CPU limit, and drains within the grace period', () => {
    expect(Number(env.POOL_SIZE)).toBeLessThanOrEqual(Number(container.resources.limits.cpu));
    expect(Number(env.SHUTDOWN_TIMEOUT_MS) / 1000).toBeLessThan(
      deployment.spec.template.spec.terminationGracePeriodSeconds,
    );
  });
  it('mounts the API keys file from a secret, read-only', () => {
    const mount = container.volumeMounts.find((m: { mountPath: string }) =>
      env.API_KEYS_FILE.startsWith(`${m.mountPath}/`),
    );
    expect(mount?.readOnly).toBe(true);
    const volume = deployment.spec.template.spec.volumes.find((v: { name: string }) => v.name === mount.name);
    const file = env.API_KEYS_FILE.slice(mount.mountPath.length + 1);
    expect(volume.secret.items).toContainEqual(expect.objectContaining({ path: file }));
  });

  it('mounts a writable volume at AUDIT_DIR (the root filesystem is read-only)', () => {
    const mount = container.volumeMounts.find((m: { mountPath: string }) => m.mountPath === env.AUDIT_DIR);
    expect(mount).toBeDefined();
    expect(deployment.spec.template.spec.volumes.map((v: { name: string }) => v.name)).toContain(mount.name);
  });

  it('selects its own pods everywhere', () => {
    for (const d of docs.filter((d) => d.spec?.selector)) {
      const sel = d.spec.selector.matchLabels ?? d.spec.selector;
      expect(sel).toEqual(deployment.spec.template.metadata.labels);
    }
  });
});

describe('monitoring', () => {
  const metricNames = (exprs: string[]) =>
    new Set(exprs.flatMap((e) => [...e.matchAll(/\b(onnxserve_[a-z0-9_]+)/g)].map((m) => m[1]!)));

  it('the dashboard and the alerts use only metrics the server exports', () => {
    const dash = JSON.parse(read('monitoring/grafana/dashboards/onnx-serve.json'));
    const rules = parse(read('monitoring/alerts.yml')).groups.flatMap((g: { rules: { expr: string }[] }) =>
      g.rules.map((r) => r.expr),
    );
    const exprs = [
      ...dash.panels.flatMap((p: { targets: { expr: string }[] }) => p.targets.map((t) => t.expr)),
      ...rules,
    ];
    const used = metricNames(exprs);
    expect(used.size).toBeGreaterThan(10);
    for (const name of used) expect(exported, name).toContain(name);
  });

  it.skipIf(!hasPromtool)('promtool accepts the Prometheus config and the alert rules', () => {
    execFileSync('promtool', ['check', 'config', join(ROOT, 'monitoring/prometheus.yml')]);
    execFileSync('promtool', ['check', 'rules', join(ROOT, 'monitoring/alerts.yml')]);
  });

  it.skipIf(!hasPromtool)('a real Prometheus scrapes the server and reads its gauges', async () => {
    const prom = await startPrometheus(new URL(server.url).host);
    try {
      await expect
        .poll(async () => (await prom.query('onnxserve_pool_workers_live').catch(() => undefined))?.[0], {
          timeout: 30_000,
          interval: 500,
        })
        .toBe(2);
      expect((await prom.query('up{job="onnx-serve"}'))[0]).toBe(1);
    } finally {
      prom.stop();
    }
  });

  it.skipIf(!hasPromtool)(
    'pool utilization, as the gauge and as rate() of the busy-seconds counter: near 0 idle, high when the worker is saturated',
    async () => {
      // A model whose rows cost far more to compute than to parse (64 → 2048 → 2048 → 2), so that one
      // worker, not the main thread, is what saturates.
      const dir = mkdtempSync(join(tmpdir(), 'models-'));
      mkdirSync(join(dir, 'heavy', '1'), { recursive: true });
      writeFileSync(join(dir, 'heavy', '1', 'model.onnx'), heavyModel());
      const busy = await startTestServer({ MODELS_DIR: dir, POOL_SIZE: '1', CACHE: 'off' });
      const prom = await startPrometheus(new URL(busy.url).host);
      const utilization = async () => {
        const [gauge] = await prom.query('onnxserve_pool_utilization');
        const [rate] = await prom.query('sum(rate(onnxserve_pool_busy_seconds_total[5s]))');
        return { gauge: gauge ?? Number.NaN, rate: rate ?? Number.NaN };
      };
      try {
        // Idle: a few scrapes with nothing to run.
        await expect
          .poll(async () => !Number.isNaN((await utilization()).rate), { timeout: 30_000, interval: 500 })
          .toBe(true);
        await new Promise((r) => setTimeout(r, 3000));
        const idle = await utilization();
        expect(idle.gauge).toBeLessThanOrEqual(0.2);
        expect(idle.rate).toBeLessThanOrEqual(0.2);
        // Saturated: four clients keep the one worker busy with 200-row batches.
        const body = JSON.stringify({
          inputs: [{ name: 'x', shape: [200, 64], datatype: 'FP32', data: Array(200 * 64).fill(0.5) }],
          parameters: { use_cache: false },
        });
        const url = `${busy.url}/v2/models/heavy/infer`;
        let stop = false;
        const client = async () => {
          while (!stop) {
            const res = await fetch(url, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body,
            });
            const text = await res.text();
            expect(res.status, text.slice(0, 300)).toBe(200);
          }
        };
        const clients = Array.from({ length: 4 }, client);
        await new Promise((r) => setTimeout(r, 7000));
        const loaded = await utilization();
        stop = true;
        await Promise.all(clients);
        expect(loaded.gauge).toBeGreaterThanOrEqual(0.5);
        expect(loaded.rate).toBeGreaterThanOrEqual(0.5);
        console.log('pool utilization idle', idle, 'saturated', loaded);
      } finally {
        prom.stop();
        await busy.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
    60_000,
  );
});
