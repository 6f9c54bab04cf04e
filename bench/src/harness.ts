/** Start servers as child processes, load them with autocannon, and read their CPU and memory. */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import autocannon from 'autocannon';
import pg from 'pg';

export interface Proc {
  name: string;
  child: ChildProcess;
  url: string;
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startProcess(opts: {
  name: string;
  cmd: string;
  args: string[];
  env?: Record<string, string>;
  url: string;
  readyPath: string;
  cwd?: string;
  timeoutMs?: number;
}): Promise<Proc> {
  const child = spawn(opts.cmd, opts.args, {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  // The output's tail only: a server logging every request writes megabytes a second under load.
  let output = '';
  const keep = (d: Buffer) => {
    output = (output + d).slice(-65_536);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${opts.name} exited (${child.exitCode}):\n${output}`);
    try {
      const res = await fetch(opts.url + opts.readyPath);
      if (res.ok) break;
    } catch {}
    if (Date.now() > deadline)
      throw new Error(`${opts.name} not ready at ${opts.url}${opts.readyPath}:\n${output}`);
    await sleep(100);
  }
  return {
    name: opts.name,
    child,
    url: opts.url,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      try {
        process.kill(-child.pid!, 'SIGTERM');
      } catch {}
      await Promise.race([exited, sleep(15_000)]);
      if (child.exitCode === null) {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {}
      }
    },
  };
}

/** CPU seconds (user + system) used so far by a process and its threads. */
export function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return Number.NaN;
  }
}

/** All pids of a process group (a server and the workers it forked, such as uvicorn's). */
export function groupPids(pgid: number): number[] {
  const out = [pgid];
  try {
    for (const d of readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1]!.split(' ');
      if (Number(stat[2]) === pgid && Number(d) !== pgid) out.push(Number(d));
    }
  } catch {}
  return out;
}

export function rssMiB(pids: number[]): number {
  let kb = 0;
  for (const pid of pids) {
    try {
      const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) kb += Number(m[1]);
    } catch {}
  }
  return Math.round(kb / 102.4) / 10;
}

export interface LoadResult {
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  errors: number;
  non2xx: number;
  requests: number;
  serverCpu: number;
  loadgenCpu: number;
  serverRssMiB: number;
}

/** Appends a round's figure to a server's list. */
export const add = (m: Record<string, number[]>, name: string, x: number) => {
  m[name] = [...(m[name] ?? []), x];
};

/** A load run whose every answer must be a 2xx: a figure from failed requests measures nothing. */
export async function loadAll(name: string, opts: Parameters<typeof load>[0]): Promise<LoadResult> {
  const r = await load(opts);
  if (r.non2xx || r.errors) throw new Error(`${name}: ${r.non2xx} non-2xx, ${r.errors} errors`);
  return r;
}

export async function load(opts: {
  url: string;
  path: string;
  connections: number;
  seconds: number;
  body: () => string;
  serverPids: number[];
  /** Sent with every request besides Content-Type (an API key, say). */
  headers?: Record<string, string>;
  /** Requests per second offered in all (an open rate); absent = each connection sends again on answer. */
  rate?: number;
}): Promise<LoadResult> {
  const cpu0 = opts.serverPids.reduce((s, p) => s + cpuSeconds(p), 0);
  const self0 = process.cpuUsage();
  const started = performance.now();
  const result = await autocannon({
    url: opts.url + opts.path,
    method: 'POST',
    headers: { 'content-type': 'application/json', ...opts.headers },
    connections: opts.connections,
    duration: opts.seconds,
    ...(opts.rate !== undefined ? { overallRate: opts.rate } : {}),
    requests: [
      {
        setupRequest: (req) => {
          req.body = opts.body();
          return req;
        },
      },
    ],
  });
  const wall = (performance.now() - started) / 1000;
  const cpu1 = opts.serverPids.reduce((s, p) => s + cpuSeconds(p), 0);
  const self = process.cpuUsage(self0);
  return {
    rps: Math.round(result.requests.average),
    p50: result.latency.p50,
    p90: result.latency.p90,
    p99: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
    requests: result.requests.total,
    serverCpu: Math.round(((cpu1 - cpu0) / wall) * 100) / 100,
    loadgenCpu: Math.round(((self.user + self.system) / 1e6 / wall) * 100) / 100,
    serverRssMiB: rssMiB(opts.serverPids),
  };
}

function cpuTimes(): { idle: number; total: number } {
  const parts = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { idle: parts[3]! + parts[4]!, total: parts.reduce((a, b) => a + b, 0) };
}

/**
 * Wait until the machine is mostly idle (at least `idleShare` of the CPU over 500 ms), at most `maxMs`: work
 * a server left behind (a peer's background database writes, say) must not land on the next run.
 */
export async function settle(idleShare = 0.85, maxMs = 15_000): Promise<number> {
  const started = Date.now();
  for (;;) {
    const a = cpuTimes();
    await new Promise((r) => setTimeout(r, 500));
    const b = cpuTimes();
    const idle = (b.idle - a.idle) / Math.max(1, b.total - a.total);
    if (idle >= idleShare || Date.now() - started > maxMs) return Date.now() - started;
  }
}

export const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** The machine's Postgres, as benches reach it (BENCH_DATABASE_URL), for databases of their own. */
export const PG_ADMIN = process.env.BENCH_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/test';

/** A database dropped (if left by an earlier run) and made afresh; its URL. */
export async function benchDatabase(name: string): Promise<string> {
  const c = new pg.Client({ connectionString: PG_ADMIN });
  await c.connect();
  await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  return PG_ADMIN.replace(/\/[^/]*$/, `/${name}`);
}

/** This checkout's server (or another checkout's, `root`), as `npm start` runs it, on `port`. */
export function startServerProcess(name: string, port: number, env: Record<string, string>, root: string) {
  return startProcess({
    name,
    cmd: process.execPath,
    args: [`${root}/dist/src/node/main.js`],
    env: { PORT: String(port), ...env },
    url: `http://127.0.0.1:${port}`,
    readyPath: '/health/ready',
    timeoutMs: 120_000,
  });
}

/** A few seconds of load on each server first, so no round measures a cold start. */
export async function warmUp(
  procs: readonly Proc[],
  body: () => string,
  headers: Record<string, string>[] = [],
) {
  for (const [i, p] of procs.entries()) {
    await load({
      url: p.url,
      path: '/predict',
      connections: 50,
      seconds: 3,
      body,
      serverPids: [],
      headers: headers[i],
    });
  }
}
