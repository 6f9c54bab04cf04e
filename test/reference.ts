/** Expected outputs computed from a model file's own weights, without any ONNX runtime. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { predictProba } from '../src/training/network.js';
import { networkFromOnnx } from '../src/training/onnx-writer.js';

export const MODELS_DIR = join(import.meta.dirname, '..', 'models');

export function referenceModel(name: string, version: string) {
  const bytes = readFileSync(join(MODELS_DIR, name, version, 'model.onnx'));
  const net = networkFromOnnx(bytes);
  const meta = JSON.parse(readFileSync(join(MODELS_DIR, name, version, 'model.json'), 'utf8')) as {
    feature_names: string[];
    class_labels: string[];
  };
  return {
    features: meta.feature_names,
    labels: meta.class_labels,
    /** Probabilities for a row, computed from float32-rounded inputs as the model sees them. */
    proba: (row: number[]) =>
      predictProba(
        net,
        row.map((v) => Math.fround(v)),
      ),
  };
}

/** Deterministic pseudo-random rows for a model with `n` features. */
export function rows(count: number, n: number, seed = 1): number[][] {
  let s = seed;
  const next = () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
  return Array.from({ length: count }, () =>
    Array.from({ length: n }, () => Math.round((next() * 8 - 4) * 1000) / 1000),
  );
}

export const argmax = (xs: number[]) => xs.indexOf(Math.max(...xs));
