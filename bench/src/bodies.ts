/** Request bodies. Unique rows use a counter, so no two requests of a run repeat a row. */
export const CHURN_FEATURES = [
  'tenure_months',
  'monthly_charges',
  'total_charges',
  'contract_length',
  'num_products',
  'support_tickets',
  'satisfaction_score',
] as const;

const CONTRACTS = [1, 12, 24];

/** The i-th churn row: distinct for every i. */
export function churnRow(i: number): number[] {
  const tenure = 1 + (i % 72);
  const monthly = 20 + ((i * 7919) % 10000) / 100;
  return [
    tenure,
    monthly,
    tenure * monthly + i / 1e6,
    CONTRACTS[i % 3]!,
    1 + (i % 5),
    i % 6,
    1 + (i % 400) / 100,
  ];
}

const named = (row: number[]) => Object.fromEntries(CHURN_FEATURES.map((f, k) => [f, row[k]!]));

let counter = 0;
/** Seed 000's body with a row no other request repeats. */
export const uniquePredictBody = () => JSON.stringify({ features: named(churnRow(++counter)) });

/** A small set of rows, cycled: every request after the first pass is a cache hit. */
export function hotSetBody(size: number) {
  const bodies = Array.from({ length: size }, (_, i) =>
    JSON.stringify({ features: named(churnRow(1_000_000 + i)) }),
  );
  let i = 0;
  return () => bodies[i++ % size]!;
}

/** Zipf-distributed rows over `n` ranks with exponent `s`: a few rows are hot, most are rare. */
export function zipfBody(n: number, s: number, seed = 7) {
  const cdf = new Float64Array(n);
  let total = 0;
  for (let k = 0; k < n; k++) {
    total += 1 / (k + 1) ** s;
    cdf[k] = total;
  }
  let state = seed;
  const rand = () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
  };
  return () => {
    const u = rand() * total;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    return JSON.stringify({ features: named(churnRow(2_000_000 + lo)) });
  };
}

/** Pre-built batch bodies (building a 1,000-row body per request would load the load generator instead). */
export function batchBodies(opts: {
  model: string;
  version?: string;
  rows: number;
  features: number;
  pool: number;
}) {
  let i = 3_000_000;
  const bodies = Array.from({ length: opts.pool }, () =>
    JSON.stringify({
      model: opts.model,
      ...(opts.version ? { version: opts.version } : {}),
      use_cache: false,
      instances: Array.from({ length: opts.rows }, () => {
        i++;
        return opts.features === 7
          ? churnRow(i)
          : Array.from({ length: opts.features }, (_, k) => Math.sin(i * 31 + k));
      }),
    }),
  );
  let next = 0;
  return () => bodies[next++ % bodies.length]!;
}
