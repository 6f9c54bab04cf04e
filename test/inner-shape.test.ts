/**
 * Models whose inputs have a free inner dimension: requests of different inner shapes must never share a
 * batch, and the cache must tell their rows apart. The model here is written by the test itself: Identity
 * over x [N, M] and y [N, K], so every answer must equal its own request.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto, { type onnx as OnnxTypes } from 'onnx-proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json, startTestServer } from './server.js';

const onnx = (onnxProto as unknown as { onnx: typeof OnnxTypes }).onnx;

const tensor = (name: string, dims: string[]): OnnxTypes.IValueInfoProto => ({
  name,
  type: {
    tensorType: {
      elemType: onnx.TensorProto.DataType.FLOAT,
      shape: { dim: dims.map((d) => ({ dimParam: d })) },
    },
  },
});

function identityModel(): Uint8Array {
  return onnx.ModelProto.encode({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'identity2',
      node: [
        { opType: 'Identity', input: ['x'], output: ['x_out'] },
        { opType: 'Identity', input: ['y'], output: ['y_out'] },
      ],
      input: [tensor('x', ['N', 'M']), tensor('y', ['N', 'K'])],
      output: [tensor('x_out', ['N', 'M']), tensor('y_out', ['N', 'K'])],
    },
  }).finish();
}

let server: Awaited<ReturnType<typeof startTestServer>>;
beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'models-'));
  mkdirSync(join(dir, 'identity2', '1'), { recursive: true });
  writeFileSync(join(dir, 'identity2', '1', 'model.onnx'), identityModel());
  // Rows wait 20 ms for company, so concurrent requests do share batches when they may.
  server = await startTestServer({ MODELS_DIR: dir, POOL_SIZE: '1', BATCH_MAX_DELAY_MS: '20' });
});
afterAll(() => server?.close());

const request = (x: number[][], y: number[][], useCache: boolean) =>
  server.post('/v2/models/identity2/infer', {
    parameters: { use_cache: useCache },
    inputs: [
      { name: 'x', shape: [x.length, x[0]!.length], datatype: 'FP32', data: x },
      { name: 'y', shape: [y.length, y[0]!.length], datatype: 'FP32', data: y },
    ],
  });

const rows = (n: number, width: number, seed: number) =>
  Array.from({ length: n }, (_, r) => Array.from({ length: width }, (_, c) => seed * 100 + r * 10 + c));

describe('inputs with a free inner dimension', () => {
  it('concurrent requests of different inner shapes each get their own rows back', async () => {
    const sent = Array.from({ length: 24 }, (_, i) => ({
      x: rows(1 + (i % 3), 1 + (i % 5), i),
      y: rows(1 + (i % 3), 1 + (i % 4), i + 50),
    }));
    const answers = await Promise.all(sent.map((s) => request(s.x, s.y, false)));
    for (const [i, res] of answers.entries()) {
      expect(res.status, `request ${i}`).toBe(200);
      const body = await json(res);
      const out = Object.fromEntries(body.outputs.map((o: { name: string }) => [o.name, o]));
      expect(out.x_out.shape).toEqual([sent[i]!.x.length, sent[i]!.x[0]!.length]);
      expect(out.x_out.data).toEqual(sent[i]!.x.flat());
      expect(out.y_out.data).toEqual(sent[i]!.y.flat());
    }
  });

  it('the cache does not confuse rows whose bytes agree but whose shapes do not', async () => {
    // x [1,2] + y [1,3] and x [1,3] + y [1,2] hold the same five numbers in the same order.
    const a = await json(await request([[1, 2]], [[3, 4, 5]], true));
    const b = await json(await request([[1, 2, 3]], [[4, 5]], true));
    expect(a.outputs.find((o: { name: string }) => o.name === 'x_out').data).toEqual([1, 2]);
    expect(b.outputs.find((o: { name: string }) => o.name === 'x_out').data).toEqual([1, 2, 3]);
    expect(b.outputs.find((o: { name: string }) => o.name === 'y_out').data).toEqual([4, 5]);
    expect(b.parameters.cached_rows).toBe(0);
  });
});
