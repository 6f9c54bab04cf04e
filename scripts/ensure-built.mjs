#!/usr/bin/env node
// `npm start` runs the compiled server. `npm install` builds it (the `prepare` script); this check rebuilds
// only when a source file is newer than the build, so a start after an edit still runs the current code
// while a plain start costs no compile (~50 ms for this check instead of ~10 s of tsc).
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const built = join(root, 'dist', 'src', 'node', 'main.js');

function newest(path) {
  const s = statSync(path, { throwIfNoEntry: false });
  if (!s) return 0;
  if (!s.isDirectory()) return s.mtimeMs;
  let max = 0;
  for (const name of readdirSync(path)) max = Math.max(max, newest(join(path, name)));
  return max;
}

const source = Math.max(
  ...['src', 'workers', 'tsconfig.json', 'tsconfig.build.json', 'package.json'].map((p) =>
    newest(join(root, p)),
  ),
);
const output = statSync(built, { throwIfNoEntry: false })?.mtimeMs ?? 0;
if (output < source) {
  console.error(output ? 'sources changed since the last build: building' : 'no build yet: building');
  execFileSync(
    process.execPath,
    [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'],
    {
      cwd: root,
      stdio: 'inherit',
    },
  );
}
