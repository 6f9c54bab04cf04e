/** A real Prometheus (Debian's `prometheus`) for tests: the project's config and alert rules, scraping a test server. */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..');
const read = (p: string) => readFileSync(join(ROOT, p), 'utf8');

/** A real Prometheus scraping `target` every second, with the project's config and rules. */
export async function startPrometheus(target: string) {
  const dir = mkdtempSync(join(tmpdir(), 'prom-'));
  const config = read('monitoring/prometheus.yml')
    .replace('["api:8000"]', `["${target}"]`)
    .replace('scrape_interval: 5s', 'scrape_interval: 1s');
  writeFileSync(join(dir, 'prometheus.yml'), config);
  writeFileSync(join(dir, 'alerts.yml'), read('monitoring/alerts.yml'));
  const port = 19090 + Math.floor(Math.random() * 500);
  const prom = spawn(
    'prometheus',
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { stdio: 'ignore' },
  );
  return {
    /** The values of an instant query's series. */
    async query(q: string): Promise<number[]> {
      const res = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(q)}`);
      const body = (await res.json()) as { data: { result: { value: [number, string] }[] } };
      return body.data.result.map((r) => Number(r.value[1]));
    },
    /** An instant query's series: labels and value. */
    async series(q: string): Promise<{ metric: Record<string, string>; value: number }[]> {
      const res = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(q)}`);
      const body = (await res.json()) as {
        data: { result: { metric: Record<string, string>; value: [number, string] }[] };
      };
      return body.data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
    },
    stop() {
      prom.kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
