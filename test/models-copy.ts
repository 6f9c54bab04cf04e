import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SHIPPED_MODELS = join(import.meta.dirname, '..', 'models');

/**
 * A copy of the shipped models for one server: a server writes stage changes and traffic policies into its
 * MODELS_DIR (model.json, traffic.json), and a test that promotes a version must not change what every
 * later test (and `git status`) finds in models/.
 */
export function modelsCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), 'models-'));
  cpSync(SHIPPED_MODELS, dir, { recursive: true });
  return dir;
}
