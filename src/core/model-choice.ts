/**
 * Which model a request means when it names none: seed clients send only `features`. The default model
 * answers rows it fits; otherwise the one model whose feature names (or count) the row matches; several
 * matches are refused with the candidates named. When none fits, the model whose feature names the row
 * shares most with (the default on a tie), or else the default, validates the row, so its error names the
 * exact field that is wrong (a missing `petal_width`, not a dozen unknown names).
 */
import { ServeError } from './errors.js';
import type { ModelEntry, ModelRegistry, TabularInput } from './registry.js';

/** The first row of a request's features: a row itself, or the first of several. */
function firstRow(features: unknown): unknown {
  return Array.isArray(features) && Array.isArray(features[0]) ? features[0] : features;
}

/** How many of the row's keys are the model's feature names (0 for arrays). */
function overlap(spec: TabularInput | undefined, row: unknown): number {
  if (!spec?.featureIndex || row === null || typeof row !== 'object' || Array.isArray(row)) return 0;
  let n = 0;
  for (const key in row) if (spec.featureIndex.has(key)) n++;
  return n;
}

function fits(spec: TabularInput | undefined, row: unknown): boolean {
  if (!spec) return false;
  if (Array.isArray(row)) return row.length === spec.features;
  if (row === null || typeof row !== 'object' || !spec.featureIndex) return false;
  let n = 0;
  for (const key in row) {
    if (!spec.featureIndex.has(key)) return false;
    n++;
  }
  return n === spec.features;
}

export function chooseModel(
  registry: ModelRegistry,
  name: string | undefined,
  version: string | undefined,
  features: unknown,
  /** Who asks (a prediction: the model's traffic policy applies). */
  caller?: { id?: string | undefined },
): ModelEntry {
  if (name !== undefined) return registry.resolve(name, version, caller);
  const row = firstRow(features);
  const fallback = registry.defaultModel;
  if (fallback !== undefined && fits(registry.versions(fallback).at(-1)?.tabular, row)) {
    return registry.resolve(fallback, version, caller);
  }
  const matches: ModelEntry[] = [];
  for (const n of registry.names()) {
    if (n === fallback) continue;
    const newest = registry.versions(n).at(-1)!;
    if (fits(newest.tabular, row)) matches.push(newest);
  }
  if (matches.length === 1) return registry.resolve(matches[0]!.name, version, caller);
  if (matches.length > 1) {
    const names = matches.map((m) => m.name);
    throw new ServeError(
      'ERR_MODEL_AMBIGUOUS',
      `these features fit several models (${names.join(', ')}): name one in 'model'`,
      { field: 'model', candidates: names },
    );
  }
  // No model fits: let the closest one (or the default) say what is wrong with the row.
  let closest = fallback;
  let best = fallback === undefined ? 0 : overlap(registry.versions(fallback).at(-1)?.tabular, row);
  for (const n of registry.names()) {
    const shared = overlap(registry.versions(n).at(-1)!.tabular, row);
    if (shared > best) {
      best = shared;
      closest = n;
    }
  }
  if (closest === undefined) {
    throw new ServeError(
      'ERR_VALIDATION',
      `no loaded model takes these features (${registry.names().join(', ')}): name one in 'model'`,
      { field: 'model' },
    );
  }
  return registry.resolve(closest, version, caller);
}
