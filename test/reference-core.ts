/** Expected outputs from a model file's own weights, without any ONNX runtime: pure, runs on every runtime. */
import { predictProba } from '../training/network.js';
import { networkFromOnnx } from '../training/onnx-writer.js';

export interface ReferenceModel {
  features: string[];
  labels: string[];
  /** Probabilities for a row, computed from float32-rounded inputs as the model sees them. */
  proba: (row: number[]) => number[];
}

export function referenceFromBytes(
  bytes: Uint8Array,
  metadata: { feature_names?: string[]; class_labels?: string[] },
): ReferenceModel {
  const net = networkFromOnnx(bytes);
  return {
    features: metadata.feature_names ?? [],
    labels: metadata.class_labels ?? [],
    proba: (row) =>
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
