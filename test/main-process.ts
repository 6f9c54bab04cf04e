/** The server as `npm start` runs it, in a child process of the test's own. */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { modelsCopy } from './models-copy.js';

const MAIN = join(import.meta.dirname, '..', 'dist', 'src', 'node', 'main.js');

/** `npm start` in a child process; audit off unless asked for, with a directory of its own. */
export function startMain(
  env: Record<string, string>,
  auditDir = mkdtempSync(join(tmpdir(), 'audit-')),
  nodeArgs: string[] = [],
) {
  const child = spawn(process.execPath, [...nodeArgs, MAIN], {
    env: {
      ...process.env,
      PORT: '0',
      AUDIT: 'off',
      AUDIT_DIR: auditDir,
      // A copy of the shipped models (see modelsCopy), served as the shipped ones are: churn by default.
      ...(env.MODELS_DIR ? {} : { MODELS_DIR: modelsCopy(), DEFAULT_MODEL: env.DEFAULT_MODEL ?? 'churn' }),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const url = new Promise<string>((resolve, reject) => {
    const check = () => {
      const m = /"msg":"models ready"/.test(output) && /"url":"(http:[^"]+)"/.exec(output);
      if (m) resolve(m[1]!);
    };
    child.stdout.on('data', check);
    void exited.then((code) => reject(new Error(`exited ${code}: ${output}`)));
  });
  url.catch(() => {}); // tests of failed starts await `exited`, not `url`
  return { child, url, exited, output: () => output };
}
