import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { computeNodeOutputs } from './node-outputs.js';
import { rows } from './reference-core.js';

it('edge/test/node-outputs.json is what onnxruntime-node gives today (npx tsx scripts/node-outputs.ts rewrites it)', async () => {
  const fixture = JSON.parse(
    readFileSync(join(import.meta.dirname, '..', 'edge', 'test', 'node-outputs.json'), 'utf8'),
  );
  expect(await computeNodeOutputs(rows)).toEqual(fixture);
});
