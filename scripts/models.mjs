#!/usr/bin/env node
// `npm run models`: with a lifecycle command (promote, history, traffic, shadow), talk to the running server
// (dist/src/node/models-cli.js); otherwise rebuild the shipped models (scripts/build-models.ts, which takes an
// optional output directory).
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
if (['promote', 'history', 'traffic', 'shadow'].includes(args[0])) {
  const cli = await import(join(root, 'dist', 'src', 'node', 'models-cli.js'));
  process.exitCode = await cli.main(args);
} else {
  const r = spawnSync('npx', ['tsx', join(root, 'scripts', 'build-models.ts'), ...args], {
    stdio: 'inherit',
  });
  process.exitCode = r.status ?? 1;
}
