import { describe, expect, it } from 'vitest';
import { createPredictor } from './predictor.js';
import { describeModel } from './registry.js';

const entry = describeModel({
  name: 'm',
  version: '1',
  sha256: 'x',
  signature: {
    inputs: [{ name: 'x', type: 'float32', shape: [null, 2] }],
    outputs: [{ name: 'y', type: 'float32', shape: [null, 2] }],
  },
});
const input = { x: { type: 'float32' as const, dims: [1, 2], data: new Float32Array([1, 2]) } };

describe('createPredictor', () => {
  it('turns a failing run into 500 ERR_INFERENCE for that batch, keeping the cause', async () => {
    const crash = new Error('worker exited');
    for (const batching of [
      false,
      { maxBatchRows: 8, maxQueueDelayMs: 0, maxQueuedRows: 100, maxInFlight: 1 },
    ] as const) {
      const predictor = createPredictor({
        backend: {
          name: 'failing',
          load: async () => new Map(),
          run: () => Promise.reject(crash),
          close: async () => {},
        },
        batching,
      });
      await expect(predictor.infer(entry, input, 1)).rejects.toMatchObject({
        code: 'ERR_INFERENCE',
        status: 500,
        cause: crash,
      });
    }
  });
});
