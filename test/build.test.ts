/**
 * Installing and CI: every dependency runs on every Node the package admits, `npm ci` accepts the lock,
 * and the hosted-CI workflow runs `.ci/run` against the services and Node lines the code expects.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { PG_URL, REDIS_URL } from './services.js';

const ROOT = join(import.meta.dirname, '..');
const read = (p: string) => readFileSync(join(ROOT, p), 'utf8');

/** npm's own semver: always installed (onnxruntime-node's global-agent needs it at run time, autocannon too). */
const semver = createRequire(import.meta.url)('semver') as {
  subset(sub: string, sup: string): boolean;
  satisfies(version: string, range: string): boolean;
  minVersion(range: string): { major: number; version: string } | null;
  validRange(range: string): string | null;
};

interface Manifest {
  version: string;
  engines?: { node?: string };
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}
interface LockEntry {
  version?: string;
  dev?: boolean;
  link?: boolean;
  engines?: { node?: string } | string[];
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

const pkg = JSON.parse(read('package.json')) as Manifest & { engines: { node: string } };
const lock = JSON.parse(read('package-lock.json')) as { packages: Record<string, LockEntry> };
const engines = pkg.engines.node;
const oldest = semver.minVersion(engines)!;

const workflow = parse(read('.github/workflows/ci.yml'));
type Step = { uses?: string; run?: string; with?: Record<string, string> };
type Job = {
  'runs-on': string;
  strategy?: { matrix?: { node?: string[] } };
  services?: Record<string, { image: string; env?: Record<string, string>; ports?: string[] }>;
  steps: Step[];
};
const ciJob = Object.values(workflow.jobs as Record<string, Job>).find((j) =>
  j.steps.some((s) => s.run?.trim() === 'bash .ci/run'),
);
const matrixNodes = (ciJob?.strategy?.matrix?.node ?? []).map(String);
const dockerMajors = [...read('Dockerfile').matchAll(/^FROM node:(\d+)/gm)].map((m) => Number(m[1]));

/** The Node lines held to: the oldest engines admits, every line CI tests, and the image's. */
const lines = [...new Set([oldest.major, ...matrixNodes.map((v) => Number.parseInt(v, 10)), ...dockerMajors])]
  .filter((m) => Number.isFinite(m))
  .sort((a, b) => a - b);
/** The releases of line `major` that package.json's engines admits, as one range. */
const ourPartOf = (major: number) => `${engines} >=${major}.0.0 <${major + 1}.0.0-0`;

/** What a dependency's engines field leaves out of the Node lines we run on, if anything. */
function excluded(range: string | undefined): number[] {
  if (!range) return [];
  if (!semver.validRange(range)) return lines;
  return lines.filter((major) => !semver.subset(ourPartOf(major), range));
}

describe('dependencies and Node', () => {
  it('engines names a real range and the lock records the same', () => {
    expect(semver.validRange(engines), engines).not.toBeNull();
    expect(lock.packages['']!.engines).toEqual(pkg.engines);
    expect(lines.length).toBeGreaterThan(0);
  });

  it('no direct dependency (production or dev) declares a Node newer than engines, on any line we run', () => {
    const bad: string[] = [];
    for (const [name, wanted] of Object.entries({ ...pkg.dependencies, ...pkg.devDependencies })) {
      const manifest = JSON.parse(
        readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8'),
      ) as Manifest;
      // What is installed is what package.json asks for (otherwise node_modules is stale: npm ci).
      expect(
        semver.satisfies(manifest.version, wanted),
        `${name}@${manifest.version} installed, ${wanted} wanted`,
      ).toBe(true);
      const range = manifest.engines?.node;
      for (const major of excluded(range))
        bad.push(
          `${name}@${manifest.version} engines.node "${range}" leaves out part of ${ourPartOf(major)}`,
        );
    }
    expect(bad).toEqual([]);
  });

  it('nor does any package of the production tree (what the image runs), as the lock records them', () => {
    const bad: string[] = [];
    for (const [path, entry] of Object.entries(lock.packages)) {
      if (!path || entry.dev || entry.link) continue;
      const range = Array.isArray(entry.engines) ? undefined : entry.engines?.node;
      for (const major of excluded(range))
        bad.push(`${path}@${entry.version} engines.node "${range}" leaves out part of ${ourPartOf(major)}`);
    }
    expect(bad).toEqual([]);
  });
});

describe('package-lock.json', () => {
  it("records every dependency and optional dependency of every package (npm ci's check), all platforms' included", () => {
    // A lock written against a registry that lacks some platform packages (Biome 2.6.8's darwin/win32
    // binaries, once) omits them, and npm ci then refuses the lock on every machine.
    const resolves = (from: string, name: string) => {
      for (let base = from; ; ) {
        if (lock.packages[`${base ? `${base}/` : ''}node_modules/${name}`]) return true;
        if (!base) return false;
        const i = base.lastIndexOf('/node_modules/');
        base = i < 0 ? '' : base.slice(0, i);
      }
    };
    const missing: string[] = [];
    for (const [path, entry] of Object.entries(lock.packages)) {
      for (const name of Object.keys({ ...entry.dependencies, ...entry.optionalDependencies })) {
        if (!resolves(path, name)) missing.push(`${path || '(root)'} -> ${name}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('npm ci accepts it (dry run in a copy holding only package.json, the lock and .npmrc)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'npm-ci-'));
    try {
      for (const f of ['package.json', 'package-lock.json', '.npmrc'])
        copyFileSync(join(ROOT, f), join(dir, f));
      execFileSync('npm', ['ci', '--dry-run', '--ignore-scripts', '--no-audit', '--no-fund'], {
        cwd: dir,
        stdio: 'pipe',
        timeout: 120_000,
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 150_000);

  it('CI and the image install with npm ci, and CI also holds the lock to npm 10', () => {
    const run = read('.ci/run');
    expect(run).toMatch(/^npm ci\b/m);
    expect(run).toMatch(/^npx -y npm@10 ci\b/m);
    expect(run).not.toMatch(/^\s*npm install\b/m);
    const docker = read('Dockerfile');
    expect(docker).toMatch(/^RUN npm ci\b/m);
    expect(docker).not.toMatch(/npm install\b/);
  });
});

describe('.github/workflows/ci.yml', () => {
  it('has one job, on ubuntu-latest, that sets up the matrix Node and runs bash .ci/run', () => {
    expect(ciJob, 'a job whose step runs `bash .ci/run`').toBeDefined();
    expect(ciJob!['runs-on']).toBe('ubuntu-latest');
    const setup = ciJob!.steps.find((s) => s.uses?.startsWith('actions/setup-node@'));
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a GitHub Actions expression, not a template
    expect(setup?.with?.['node-version']).toBe('${{ matrix.node }}');
    const order = ciJob!.steps.map((s) => s.uses?.split('@')[0] ?? s.run?.trim());
    expect(order.indexOf('actions/checkout')).toBeLessThan(order.indexOf('bash .ci/run'));
    expect(order.indexOf('actions/setup-node')).toBeLessThan(order.indexOf('bash .ci/run'));
  });

  it('tests every LTS line engines admits, up to the Docker image, and none it does not', () => {
    const majors = matrixNodes.map((v) => {
      expect(v, 'a bare major: setup-node then takes its newest release').toMatch(/^\d+$/);
      return Number(v);
    });
    for (const major of majors) {
      // setup-node installs the line's newest release: engines must admit some of the line.
      expect(major, `Node ${major}`).toBeGreaterThanOrEqual(oldest.major);
      expect(semver.satisfies(`${major}.99.99`, engines), `Node ${major} against ${engines}`).toBe(true);
    }
    expect(majors).toContain(oldest.major);
    for (const m of dockerMajors) expect(majors).toContain(m);
    for (let m = oldest.major; m <= Math.max(...dockerMajors); m += 2) expect(majors).toContain(m);
  });

  it('runs Postgres and Redis as services where test/services.ts and .ci/run look for them', () => {
    const services = Object.values(ciJob!.services ?? {});
    const pg = services.find((s) => s.image.startsWith('postgres:'));
    const redis = services.find((s) => s.image.startsWith('redis:'));
    expect(pg, 'a postgres service').toBeDefined();
    expect(redis, 'a redis service').toBeDefined();

    const pgUrl = new URL(PG_URL);
    const pgPort = pgUrl.port || '5432';
    expect(pg!.ports).toContain(`${pgPort}:5432`);
    expect(pgUrl.hostname).toBe('127.0.0.1');
    expect(pg!.env?.POSTGRES_USER ?? 'postgres').toBe(decodeURIComponent(pgUrl.username) || 'postgres');
    expect(pg!.env?.POSTGRES_DB).toBe(pgUrl.pathname.slice(1));
    if (!pgUrl.password) expect(pg!.env?.POSTGRES_HOST_AUTH_METHOD).toBe('trust');
    else expect(pg!.env?.POSTGRES_PASSWORD).toBe(decodeURIComponent(pgUrl.password));

    const redisUrl = new URL(REDIS_URL);
    const redisPort = redisUrl.port || '6379';
    expect(redis!.ports).toContain(`${redisPort}:6379`);
    expect(redisUrl.hostname).toBe('127.0.0.1');

    // .ci/run waits for the same ports before it runs the tests.
    const run = read('.ci/run');
    expect(run).toContain(`pg_isready -h 127.0.0.1 -p ${pgPort}`);
    expect(run).toContain(`redis-cli -h 127.0.0.1 -p ${redisPort} ping`);

    // The same majors as docker-compose.yml runs.
    const compose = parse(read('docker-compose.yml'));
    const major = (image: string) => /:(\d+)/.exec(image)?.[1];
    expect(major(pg!.image)).toBe(major(compose.services.postgres.image));
    expect(major(redis!.image)).toBe(major(compose.services.redis.image));
  });

  it('.ci/run installs system packages through sudo when it is not root', () => {
    const run = read('.ci/run').replace(/\\\n\s*/g, ' ');
    expect(run).toMatch(/id -u/);
    for (const line of run.split('\n').filter((l) => /\bapt-get (update|install)\b/.test(l))) {
      // biome-ignore lint/suspicious/noTemplateCurlyInString: bash's array expansion, not a template
      expect(line, line).toContain('"${SUDO[@]}"');
    }
    execFileSync('bash', ['-n', join(ROOT, '.ci/run')]);
  });
});
