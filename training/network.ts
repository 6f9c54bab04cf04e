import { createRng, permutation } from './rng.js';

/** A dense layer: y = x·w + b, with w stored as [inputs][outputs]. */
export interface DenseLayer {
  w: number[][];
  b: number[];
}

/** Dense layers with ReLU between them and softmax at the end. No hidden layer = softmax regression. */
export interface Network {
  layers: DenseLayer[];
}

export interface TrainOptions {
  hidden: number[];
  epochs: number;
  learningRate: number;
  l2: number;
  batchSize: number;
  seed: number;
}

/** Class probabilities for one row, in float64: the reference the tests hold ONNX outputs against. */
export function predictProba(net: Network, row: readonly number[]): number[] {
  let a: number[] = [...row];
  net.layers.forEach((layer, li) => {
    const out = layer.b.slice();
    for (let i = 0; i < a.length; i++) {
      const ai = a[i]!;
      if (ai === 0) continue;
      const wi = layer.w[i]!;
      for (let o = 0; o < out.length; o++) out[o]! += ai * wi[o]!;
    }
    a = li < net.layers.length - 1 ? out.map((v) => Math.max(0, v)) : out;
  });
  return softmax(a);
}

export function softmax(z: readonly number[]): number[] {
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const s = e.reduce((p, v) => p + v, 0);
  return e.map((v) => v / s);
}

interface Standardizer {
  mean: number[];
  std: number[];
}

function standardizer(x: number[][]): Standardizer {
  const d = x[0]!.length;
  const mean = new Array<number>(d).fill(0);
  const std = new Array<number>(d).fill(0);
  for (const row of x) for (let j = 0; j < d; j++) mean[j]! += row[j]! / x.length;
  for (const row of x) for (let j = 0; j < d; j++) std[j]! += (row[j]! - mean[j]!) ** 2 / x.length;
  return { mean, std: std.map((v) => Math.sqrt(v) || 1) };
}

/** Fold (x - mean) / std into the first layer so the exported graph takes raw features. */
function foldStandardizer(net: Network, s: Standardizer): Network {
  const [first, ...rest] = net.layers;
  const w = first!.w.map((wi, i) => wi.map((v) => v / s.std[i]!));
  const b = first!.b.map(
    (bo, o) => bo - first!.w.reduce((acc, wi, i) => acc + (wi[o]! * s.mean[i]!) / s.std[i]!, 0),
  );
  return { layers: [{ w, b }, ...rest] };
}

/** Mini-batch Adam on cross-entropy with L2; deterministic for a given seed. */
export function train(x: number[][], y: number[], classes: number, opts: TrainOptions): Network {
  const rng = createRng(opts.seed);
  const s = standardizer(x);
  const xs = x.map((row) => row.map((v, j) => (v - s.mean[j]!) / s.std[j]!));
  const sizes = [x[0]!.length, ...opts.hidden, classes];
  const layers: DenseLayer[] = [];
  for (let l = 0; l + 1 < sizes.length; l++) {
    const fanIn = sizes[l]!;
    const scale = Math.sqrt(2 / fanIn);
    layers.push({
      w: Array.from({ length: fanIn }, () =>
        Array.from({ length: sizes[l + 1]! }, () => rng.normal() * scale),
      ),
      b: new Array<number>(sizes[l + 1]!).fill(0),
    });
  }
  const zeros = () => layers.map((L) => ({ w: L.w.map((r) => r.map(() => 0)), b: L.b.map(() => 0) }));
  const m1 = zeros();
  const m2 = zeros();
  const [beta1, beta2, eps] = [0.9, 0.999, 1e-8];
  let step = 0;

  for (let epoch = 0; epoch < opts.epochs; epoch++) {
    const order = permutation(xs.length, rng);
    for (let start = 0; start < order.length; start += opts.batchSize) {
      const batch = order.slice(start, start + opts.batchSize);
      const grad = zeros();
      for (const idx of batch) {
        // forward, keeping activations
        const acts: number[][] = [xs[idx]!];
        for (let l = 0; l < layers.length; l++) {
          const L = layers[l]!;
          const a = acts[l]!;
          const z = L.b.slice();
          for (let i = 0; i < a.length; i++) for (let o = 0; o < z.length; o++) z[o]! += a[i]! * L.w[i]![o]!;
          acts.push(l < layers.length - 1 ? z.map((v) => Math.max(0, v)) : softmax(z));
        }
        // backward
        let delta = acts[layers.length]!.map((p, c) => p - (c === y[idx] ? 1 : 0));
        for (let l = layers.length - 1; l >= 0; l--) {
          const a = acts[l]!;
          const g = grad[l]!;
          for (let i = 0; i < a.length; i++)
            for (let o = 0; o < delta.length; o++) g.w[i]![o]! += a[i]! * delta[o]!;
          for (let o = 0; o < delta.length; o++) g.b[o]! += delta[o]!;
          if (l > 0) {
            const L = layers[l]!;
            delta = a.map((ai, i) => (ai > 0 ? L.w[i]!.reduce((acc, w, o) => acc + w * delta[o]!, 0) : 0));
          }
        }
      }
      step++;
      const lr = (opts.learningRate * Math.sqrt(1 - beta2 ** step)) / (1 - beta1 ** step);
      const update = (p: number[], g: number[], v1: number[], v2: number[], decay: number) => {
        for (let k = 0; k < p.length; k++) {
          const gk = g[k]! / batch.length + decay * p[k]!;
          v1[k] = beta1 * v1[k]! + (1 - beta1) * gk;
          v2[k] = beta2 * v2[k]! + (1 - beta2) * gk * gk;
          p[k]! -= (lr * v1[k]!) / (Math.sqrt(v2[k]!) + eps);
        }
      };
      layers.forEach((L, l) => {
        L.w.forEach((row, i) => {
          update(row, grad[l]!.w[i]!, m1[l]!.w[i]!, m2[l]!.w[i]!, opts.l2);
        });
        update(L.b, grad[l]!.b, m1[l]!.b, m2[l]!.b, 0);
      });
    }
  }
  return foldStandardizer({ layers }, s);
}

export interface Evaluation {
  accuracy: number;
  log_loss: number;
  roc_auc?: number;
  test_rows: number;
}

export function evaluate(net: Network, x: number[][], y: number[]): Evaluation {
  const probs = x.map((row) => predictProba(net, row));
  let correct = 0;
  let loss = 0;
  probs.forEach((p, i) => {
    const pred = p.indexOf(Math.max(...p));
    if (pred === y[i]) correct++;
    loss -= Math.log(Math.max(p[y[i]!]!, 1e-15));
  });
  const result: Evaluation = {
    accuracy: round(correct / x.length),
    log_loss: round(loss / x.length),
    test_rows: x.length,
  };
  if (probs[0]!.length === 2)
    result.roc_auc = round(
      auc(
        probs.map((p) => p[1]!),
        y,
      ),
    );
  return result;
}

function auc(scores: number[], y: number[]): number {
  const order = scores.map((s, i) => [s, y[i]!] as const).sort((a, b) => a[0] - b[0]);
  let rankSum = 0;
  let pos = 0;
  order.forEach(([, label], r) => {
    if (label === 1) {
      rankSum += r + 1;
      pos++;
    }
  });
  const neg = order.length - pos;
  return (rankSum - (pos * (pos + 1)) / 2) / (pos * neg);
}

const round = (v: number) => Math.round(v * 1e4) / 1e4;
