/**
 * The shipped models must leave the suite as they came: servers write stage changes and traffic policies
 * into their MODELS_DIR, so every test server works on a copy (test/models-copy.ts). This holds the suite to
 * that: a test that writes into models/ fails the run, rather than changing what later tests find there.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

const MODELS = join(import.meta.dirname, '..', 'models');

function fingerprint(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    out.set(relative(MODELS, path), createHash('sha256').update(readFileSync(path)).digest('hex'));
  }
  return out;
}

export function setup() {
  const before = fingerprint(MODELS);
  return () => {
    const after = fingerprint(MODELS);
    const changed = [...new Set([...before.keys(), ...after.keys()])].filter(
      (f) => before.get(f) !== after.get(f),
    );
    if (changed.length > 0) {
      // An error thrown here is printed but leaves Vitest's exit code at 0: say it, and fail the run.
      console.error(
        `the suite changed the shipped models (use a copy: test/models-copy.ts): ${changed.join(', ')}`,
      );
      process.exit(1);
    }
  };
}
