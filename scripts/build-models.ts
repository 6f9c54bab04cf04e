/**
 * Rebuild the shipped models: `npm run models`. Deterministic: the same seeds give the same bytes, and a
 * model.json keeps its `created` time while its model.onnx is unchanged.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { buildReference, scoreOfProbabilities } from '../src/core/drift.js';
import { churnDataset, type Dataset, gaussianDataset, irisDataset, split } from '../training/dataset.js';
import { evaluate, predictProba, type TrainOptions, train } from '../training/network.js';
import { networkToOnnx } from '../training/onnx-writer.js';

const modelsDir = process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'models');

interface Spec {
  name: string;
  version: string;
  dataset: () => Dataset;
  algorithm: string;
  options: TrainOptions;
}

const specs: Spec[] = [
  {
    name: 'churn',
    version: '1',
    dataset: () => churnDataset(5000, 42),
    algorithm: 'logistic regression (softmax, Adam)',
    options: { hidden: [], epochs: 30, learningRate: 0.05, l2: 1e-4, batchSize: 64, seed: 1 },
  },
  {
    name: 'churn',
    version: '2',
    dataset: () => churnDataset(5000, 42),
    algorithm: 'MLP 7-16-2 (ReLU, Adam)',
    options: { hidden: [16], epochs: 40, learningRate: 0.01, l2: 1e-4, batchSize: 64, seed: 2 },
  },
  {
    name: 'classifier-10',
    version: '1',
    dataset: () =>
      gaussianDataset({
        name: 'classifier-10',
        description:
          'Binary classifier on ten standard-normal features with pairwise interactions (synthetic).',
        dims: 10,
        n: 4000,
        seed: 10,
        featurePrefix: 'feature_',
        classLabels: ['negative', 'positive'],
        bias: 0,
      }),
    algorithm: 'MLP 10-32-2 (ReLU, Adam)',
    options: { hidden: [32], epochs: 40, learningRate: 0.01, l2: 1e-4, batchSize: 64, seed: 3 },
  },
  {
    name: 'fraud',
    version: '1',
    dataset: () =>
      gaussianDataset({
        name: 'fraud',
        description:
          'Transaction fraud (1 = fraud) on twenty anonymised features, about 10 % positives (synthetic).',
        dims: 20,
        n: 6000,
        seed: 20,
        featurePrefix: 'feature_',
        classLabels: ['legit', 'fraud'],
        bias: -5,
      }),
    algorithm: 'MLP 20-32-16-2 (ReLU, Adam)',
    options: { hidden: [32, 16], epochs: 30, learningRate: 0.01, l2: 1e-4, batchSize: 64, seed: 4 },
  },
  {
    name: 'iris',
    version: '1',
    dataset: irisDataset,
    algorithm: 'multinomial logistic regression (softmax, Adam)',
    options: { hidden: [], epochs: 300, learningRate: 0.05, l2: 1e-4, batchSize: 16, seed: 5 },
  },
  {
    name: 'mlp-large',
    version: '1',
    dataset: () =>
      gaussianDataset({
        name: 'mlp-large',
        description:
          'A wide MLP on 64 synthetic features, big enough that inference dominates a request (benchmarks).',
        dims: 64,
        n: 1500,
        seed: 64,
        featurePrefix: 'x',
        classLabels: ['negative', 'positive'],
        bias: 0,
      }),
    algorithm: 'MLP 64-256-256-2 (ReLU, Adam)',
    options: { hidden: [256, 256], epochs: 2, learningRate: 0.002, l2: 1e-4, batchSize: 64, seed: 6 },
  },
];

/**
 * What serving compares traffic with to tell drift (src/core/drift.ts): each feature's distribution over the
 * training rows, in decile bins, and the model's own predictions on them (score and predicted class).
 */
function driftReference(ds: Dataset, x: number[][], net: Parameters<typeof predictProba>[0]) {
  const classes = ds.classLabels.length;
  const probabilities = x.map((row) => predictProba(net, row));
  return buildReference({
    source: 'training',
    featureNames: ds.featureNames,
    columns: ds.featureNames.map((_, j) => x.map((row) => row[j]!)),
    scores: probabilities.map((p) => scoreOfProbabilities(p, 0, classes)),
    classes: {
      values: probabilities.map((p) => p.indexOf(Math.max(...p))),
      count: classes,
    },
  });
}

for (const spec of specs) {
  const started = performance.now();
  const ds = spec.dataset();
  const { train: tr, test } = split(ds, 0.2, 1234);
  const net = train(tr.x, tr.y, ds.classLabels.length, spec.options);
  const metrics = evaluate(net, test.x, test.y);
  const bytes = networkToOnnx(net, { name: `${spec.name}_v${spec.version}`, docString: ds.description });

  // Check the file with the real runtime before shipping it.
  const session = await ort.InferenceSession.create(bytes);
  const probe = test.x.slice(0, 16);
  const out = await session.run({
    float_input: new ort.Tensor('float32', Float32Array.from(probe.flat()), [
      probe.length,
      ds.featureNames.length,
    ]),
  });
  const probs = out.probabilities!.data as Float32Array;
  probe.forEach((row, i) => {
    predictProba(net, row).forEach((p, c) => {
      const got = probs[i * ds.classLabels.length + c]!;
      if (Math.abs(got - p) > 1e-4)
        throw new Error(`${spec.name}: onnxruntime gives ${got}, weights give ${p}`);
    });
  });
  await session.release();

  const dir = join(modelsDir, spec.name, spec.version);
  mkdirSync(dir, { recursive: true });
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const metaPath = join(dir, 'model.json');
  const previous = existsSync(metaPath) ? JSON.parse(readFileSync(metaPath, 'utf8')) : undefined;
  const created = previous?.sha256 === sha256 ? previous.created : new Date().toISOString();
  const meta = {
    name: spec.name,
    version: spec.version,
    description: ds.description,
    feature_names: ds.featureNames,
    class_labels: ds.classLabels,
    training: {
      algorithm: spec.algorithm,
      hyperparameters: spec.options,
      dataset: {
        name: ds.name,
        synthetic: ds.synthetic,
        rows: ds.x.length,
        train_rows: tr.x.length,
        test_rows: test.x.length,
        class_counts: Object.fromEntries(
          ds.classLabels.map((label, c) => [label, ds.y.filter((v) => v === c).length]),
        ),
      },
    },
    metrics,
    sha256,
    created,
    drift_reference: driftReference(ds, tr.x, net),
  };
  writeFileSync(join(dir, 'model.onnx'), bytes);
  writeFileSync(metaPath, `${JSON.stringify(meta, null, 2)}\n`);
  const ms = Math.round(performance.now() - started);
  console.log(`${spec.name}/${spec.version}: ${bytes.length} bytes, ${JSON.stringify(metrics)} (${ms} ms)`);
}
