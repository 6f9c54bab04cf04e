/**
 * onnxruntime-node's outputs for every shipped model on fixed rows: the edge tests hold onnxruntime-web in
 * workerd to these within 1e-6. `npx tsx scripts/node-outputs.ts` rewrites edge/test/node-outputs.json;
 * test/node-outputs.test.ts fails when it no longer matches.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { computeNodeOutputs } from '../test/node-outputs.js';
import { rows } from '../test/reference-core.js';

const out = await computeNodeOutputs(rows);
writeFileSync(
  join(import.meta.dirname, '..', 'edge', 'test', 'node-outputs.json'),
  `${JSON.stringify(out)}\n`,
);
console.log(`wrote ${Object.keys(out).length} models`);
