import type { ModelEntry } from './registry.js';
import type { Tensor } from './tensor.js';

export interface RowPrediction {
  /** Class index (classifiers) or value (regressors). */
  prediction: number;
  /** The class's name, where model.json gives class labels. */
  label?: string;
  /** Binary: the positive class's probability; multiclass: the predicted class's. Or every class's (`list`). */
  probability?: number | number[];
  /** Every class's probability, keyed by label (or class index where there are no labels). */
  probabilities?: Record<string, number>;
}

/**
 * Probabilities to 7 decimal places: a float32 holds about 7 significant digits, so its 17-digit double
 * form (0.16040760278701782) is noise that costs bytes and formatting time. /v2 returns outputs exactly.
 */
const round7 = (v: number) => Math.round(v * 1e7) / 1e7;

/** Turn a tabular model's outputs for `rows` rows into one result per row. */
export function toRowPredictions(
  entry: ModelEntry,
  outputs: Record<string, Tensor>,
  rows: number,
  probability: 'positive' | 'list' = 'positive',
): RowPrediction[] {
  const probs = entry.probabilityOutput ? outputs[entry.probabilityOutput] : undefined;
  const pred = entry.predictionOutput ? outputs[entry.predictionOutput] : undefined;
  const classes = probs ? probs.data.length / rows : 0;
  const keys = entry.classLabels ?? Array.from({ length: classes }, (_, c) => String(c));
  const results: RowPrediction[] = new Array(rows);
  for (let r = 0; r < rows; r++) {
    let prediction: number;
    if (pred) {
      const per = pred.data.length / rows;
      prediction = Number(pred.data[r * per]);
    } else {
      prediction = argmax(probs!.data as Float32Array, r * classes, classes);
    }
    const result: RowPrediction = { prediction };
    if (entry.classLabels && Number.isInteger(prediction)) {
      const label = entry.classLabels[prediction];
      if (label !== undefined) result.label = label;
    }
    if (probs) {
      const p = probs.data as Float32Array;
      const base = r * classes;
      const all: Record<string, number> = {};
      for (let c = 0; c < classes; c++) all[keys[c]!] = round7(p[base + c]!);
      if (probability === 'list') {
        const list: number[] = new Array(classes);
        for (let c = 0; c < classes; c++) list[c] = round7(p[base + c]!);
        result.probability = list;
      } else result.probability = round7(classes === 2 ? p[base + 1]! : p[base + prediction]!);
      result.probabilities = all;
    }
    results[r] = result;
  }
  return results;
}

function argmax(data: Float32Array, from: number, n: number): number {
  let best = 0;
  for (let c = 1; c < n; c++) if (data[from + c]! > data[from + best]!) best = c;
  return best;
}
