/**
 * Turn the runs into bench/results/latest.json, bench/RESULTS.md and bench/results/chart.svg. Also a CLI:
 * `npx tsx bench/src/report.ts` re-renders them from results/latest.json without running anything.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderChart } from './chart.js';
import { type LoadResult, median } from './harness.js';

export interface Run extends LoadResult {
  scenario: string;
  connections: number;
  round: number;
  /** Rows per second of answered (2xx) requests. */
  rowsPerSecond: number;
  cacheHitRatio?: number;
}

export interface ScenarioInfo {
  id: string;
  title: string;
  server: string;
  path: string;
  rows: number;
}

export interface ReportInput {
  quick: boolean;
  seconds: number;
  warmup: number;
  rounds: number;
  connections: number[];
  started: Date;
  scenarios: ScenarioInfo[];
  runs: Run[];
  root: string;
  machine?: Record<string, unknown>;
}

export function writeReport(input: ReportInput): void {
  const { quick, runs, root: ROOT } = input;
  const SECONDS = input.seconds;
  const WARMUP = input.warmup;
  const ROUNDS = input.rounds;
  const CONNECTIONS = input.connections;
  const started = input.started;
  const scenarios = input.scenarios;
  const byScenario = (id: string, c: number) => runs.filter((r) => r.scenario === id && r.connections === c);
  const med = (id: string, c: number, k: keyof Run) => median(byScenario(id, c).map((r) => Number(r[k])));
  const range = (id: string, c: number, k: keyof Run) => {
    const v = byScenario(id, c).map((r) => Number(r[k]));
    return `${Math.min(...v)}–${Math.max(...v)}`;
  };

  for (const sc of scenarios) {
    for (const c of CONNECTIONS) {
      const rs = byScenario(sc.id, c);
      if (rs.length === 0 || rs.every((r) => r.requests - r.non2xx - r.errors <= 0)) {
        throw new Error(`scenario ${sc.id} at ${c} connections answered no request`);
      }
    }
  }

  interface Target {
    name: string;
    value: number;
    goal: number;
    unit: string;
    pass: boolean;
    detail: string;
  }
  const targets: Target[] = [];
  const top = CONNECTIONS.at(-1)!;
  for (const c of CONNECTIONS) {
    const ceiling = med('ceiling', c, 'rps');
    const ratio = (id: string) => Math.round((med(id, c, 'rps') / ceiling) * 100) / 100;
    targets.push({
      name: `uncached /predict vs ceiling @${c}`,
      value: ratio('predict-unique'),
      goal: 1,
      unit: '×',
      pass: ratio('predict-unique') >= 1,
      detail: `${med('predict-unique', c, 'rps')} vs ${ceiling} req/s`,
    });
    targets.push({
      name: `cached /predict vs ceiling @${c}`,
      value: ratio('predict-hot'),
      goal: 1,
      unit: '×',
      pass: ratio('predict-hot') >= 1,
      detail: `${med('predict-hot', c, 'rps')} vs ${ceiling} req/s`,
    });
    if (scenarios.some((sc) => sc.id === 'peer-w1')) {
      const peer = Math.max(med('peer-w1', c, 'rps'), med('peer-w2', c, 'rps'));
      const peerBest = med('peer-w1', c, 'rps') >= med('peer-w2', c, 'rps') ? 'peer-w1' : 'peer-w2';
      const vsPeer = Math.round((med('both-on', c, 'rps') / peer) * 10) / 10;
      const lowerP99 = med('both-on', c, 'p99') < med(peerBest, c, 'p99');
      targets.push({
        name: `ours (cache + audit on) vs the Python peer's best @${c}`,
        value: vsPeer,
        goal: 15,
        unit: '×',
        pass: vsPeer >= 15 && lowerP99,
        detail: `${med('both-on', c, 'rps')} vs ${peer} req/s (${peerBest}); p99 ${med('both-on', c, 'p99')} vs ${med(peerBest, c, 'p99')} ms`,
      });
    }
    const batchRows = Math.max(med('batch-64', c, 'rowsPerSecond'), med('batch-1000', c, 'rowsPerSecond'));
    targets.push({
      name: `batch rows/s, churn logistic regression @${c}`,
      value: batchRows,
      goal: 1_000_000,
      unit: 'rows/s',
      pass: batchRows >= 1_000_000,
      detail: `64 rows: ${med('batch-64', c, 'rowsPerSecond')}, 1,000 rows: ${med('batch-1000', c, 'rowsPerSecond')}`,
    });
    const scale =
      Math.round((med('mlp-2w', c, 'rowsPerSecond') / med('mlp-1w', c, 'rowsPerSecond')) * 100) / 100;
    targets.push({
      name: `mlp-large throughput, 2 workers vs 1 @${c}`,
      value: scale,
      goal: 1.7,
      unit: '×',
      pass: scale >= 1.7,
      detail: `${med('mlp-2w', c, 'rowsPerSecond')} vs ${med('mlp-1w', c, 'rowsPerSecond')} rows/s`,
    });
  }

  const sh = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8' }).trim();
    } catch {
      return 'unknown';
    }
  };
  const machine = input.machine ?? {
    cpus: `${cpus().length} × ${cpus()[0]?.model ?? '?'}`,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    commit: sh('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']),
    loadGenerator: 'autocannon 9 (in the runner process, sharing the 2 cores with the server)',
  };
  const outDir = join(ROOT, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  const command = quick ? 'npm run bench:quick' : 'npm run bench';
  const report = {
    command,
    started: started.toISOString(),
    finished: new Date().toISOString(),
    quick,
    seconds: SECONDS,
    rounds: ROUNDS,
    connections: CONNECTIONS,
    machine,
    scenarios: scenarios.map(({ id, title, server, path, rows }) => ({ id, title, server, path, rows })),
    warmup: WARMUP,
    targets,
    runs,
  };
  writeFileSync(join(outDir, quick ? 'quick.json' : 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);

  if (!quick) {
    const lines: string[] = [];
    lines.push('# Benchmark results', '');
    lines.push(
      `Made by \`${command}\` on ${report.finished.slice(0, 16).replace('T', ' ')} UTC, commit ${machine.commit}: ${machine.cpus}, ${machine.memoryGiB} GiB, Node ${machine.node}.`,
    );
    lines.push(
      `Load: ${machine.loadGenerator}. Each figure is the median of ${ROUNDS} runs of ${SECONDS} s (min–max beside it); every scenario ran once per round, in turn, after a ${WARMUP} s warm-up, and each run waited for the machine to be ≥ 85 % idle first. All runs and their CPU and memory figures are in \`results/latest.json\`.`,
      '',
    );
    lines.push('## Targets', '', '| target | measured | goal | result | detail |', '|---|---|---|---|---|');
    for (const t of targets)
      lines.push(
        `| ${t.name} | ${t.value.toLocaleString('en-US')} ${t.unit} | ≥ ${t.goal.toLocaleString('en-US')} ${t.unit} | ${t.pass ? 'pass' : '**miss**'} | ${t.detail} |`,
      );
    for (const c of CONNECTIONS) {
      const ceiling = med('ceiling', c, 'rps');
      lines.push(
        '',
        `## ${c} connections`,
        '',
        '| scenario | req/s | rows/s | × ceiling | p50 ms | p90 ms | p99 ms | errors + non-2xx | server CPU (cores) | load-gen CPU | server RSS MiB | cache hits |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|',
      );
      for (const sc of scenarios) {
        const rs = byScenario(sc.id, c);
        const hits =
          rs[0]?.cacheHitRatio !== undefined
            ? `${Math.round(median(rs.map((r) => r.cacheHitRatio!)) * 100)} %`
            : '';
        lines.push(
          `| ${sc.title} | ${med(sc.id, c, 'rps')} (${range(sc.id, c, 'rps')}) | ${med(sc.id, c, 'rowsPerSecond').toLocaleString('en-US')} | ${(med(sc.id, c, 'rps') / ceiling).toFixed(2)} | ${med(sc.id, c, 'p50')} | ${med(sc.id, c, 'p90')} | ${med(sc.id, c, 'p99')} | ${rs.reduce((n, r) => n + r.errors + r.non2xx, 0)} | ${med(sc.id, c, 'serverCpu')} | ${med(sc.id, c, 'loadgenCpu')} | ${med(sc.id, c, 'serverRssMiB')} | ${hits} |`,
        );
      }
    }
    lines.push('', '![throughput and p99 per scenario](results/chart.svg)', '');
    const notes = join(ROOT, 'bench', 'NOTES.md');
    if (existsSync(notes)) lines.push(readFileSync(notes, 'utf8'));
    writeFileSync(join(ROOT, 'bench', 'RESULTS.md'), `${lines.join('\n')}\n`);
    writeFileSync(
      join(outDir, 'chart.svg'),
      renderChart(
        scenarios.map((sc) => ({ label: sc.id, rps: med(sc.id, top, 'rps'), p99: med(sc.id, top, 'p99') })),
        `median of ${ROUNDS} runs at ${top} connections`,
      ),
    );
  }
  console.log('\ntargets:');
  for (const t of targets)
    console.log(
      `  ${t.pass ? 'pass' : 'MISS'}  ${t.name}: ${t.value} ${t.unit} (goal ${t.goal}) — ${t.detail}`,
    );
  console.log(
    `\nbench: ${runs.length} runs recorded in ${join(outDir, quick ? 'quick.json' : 'latest.json')}`,
  );
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  const saved = JSON.parse(readFileSync(join(root, 'bench', 'results', 'latest.json'), 'utf8'));
  // Rows/s from answered requests only, whatever the saved runs say.
  const runs: Run[] = saved.runs.map((r: Run) => {
    const rows = saved.scenarios.find((s: ScenarioInfo) => s.id === r.scenario).rows;
    const ok = r.requests > 0 ? (r.requests - r.non2xx - r.errors) / r.requests : 0;
    return { ...r, rowsPerSecond: Math.round(r.rps * ok * rows) };
  });
  writeReport({
    quick: false,
    seconds: saved.seconds,
    warmup: saved.warmup ?? 3,
    rounds: saved.rounds,
    connections: saved.connections,
    started: new Date(saved.started),
    scenarios: saved.scenarios,
    runs,
    root,
    machine: saved.machine,
  });
}
