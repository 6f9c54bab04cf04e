import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MODELS_DIR } from '../../test/reference.js';
import { createPoolBackend } from './pool-backend.js';

const row = (first: number) => ({
  float_input: {
    type: 'float32' as const,
    dims: [1, 7],
    data: Float32Array.from([first, 50, 600, 12, 2, 1, 3]),
  },
});

describe('pool backend', () => {
  it('replaces its models: runs already started finish on the old workers, the new set serves, a dropped model is refused', async () => {
    const backend = createPoolBackend({ size: 2 });
    const churn = { id: 'churn@1', path: join(MODELS_DIR, 'churn/1/model.onnx') };
    const large = { id: 'mlp-large@1', path: join(MODELS_DIR, 'mlp-large/1/model.onnx') };
    await backend.load([churn, large]);
    const big = {
      float_input: {
        type: 'float32' as const,
        dims: [4000, 64],
        data: new Float32Array(4000 * 64).fill(0.5),
      },
    };
    // Started on the old pool, which must not close under them.
    const running = [backend.run('mlp-large@1', big), backend.run('churn@1', row(1))];
    const replaced = backend.replace([churn]);
    const outputs = await Promise.all(running);
    expect(outputs[0]!.probabilities!.dims).toEqual([4000, 2]);
    const signatures = await replaced;
    expect([...signatures.keys()]).toEqual(['churn@1']);
    expect((await backend.run('churn@1', row(2))).probabilities!.dims).toEqual([1, 2]);
    await expect(backend.run('mlp-large@1', big)).rejects.toMatchObject({
      code: 'ERR_MODEL_UNAVAILABLE',
      status: 503,
    });
    expect(backend.stats().liveWorkers).toBe(2);
    await backend.close();
  });

  it('replaces a worker that dies; only the batch it was running fails', async () => {
    const backend = createPoolBackend({
      size: 2,
      workerFile: join(import.meta.dirname, '../../test/fixtures/crashing-worker.mjs'),
    });
    await backend.load([{ id: 'churn@1', path: join(MODELS_DIR, 'churn/1/model.onnx') }]);
    expect(backend.stats().liveWorkers).toBe(2);
    const results = await Promise.allSettled([
      backend.run('churn@1', row(-999)),
      backend.run('churn@1', row(10)),
      backend.run('churn@1', row(20)),
    ]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'fulfilled', 'fulfilled']);
    // The pool goes on serving, on a replacement worker.
    for (let i = 0; i < 6; i++) {
      const out = await backend.run('churn@1', row(i));
      expect(out.probabilities!.dims).toEqual([1, 2]);
    }
    await expect.poll(() => backend.stats().liveWorkers).toBe(2);
    await backend.close();
  });

  it('ends a run that passes the time limit, replaces its worker, and goes on serving', async () => {
    const backend = createPoolBackend({
      size: 1,
      runTimeoutMs: 300,
      workerFile: join(import.meta.dirname, '../../test/fixtures/hanging-worker.mjs'),
    });
    await backend.load([{ id: 'churn@1', path: join(MODELS_DIR, 'churn/1/model.onnx') }]);
    const started = performance.now();
    await expect(backend.run('churn@1', row(-777))).rejects.toMatchObject({
      code: 'ERR_INFERENCE',
      status: 500,
    });
    expect(performance.now() - started).toBeLessThan(5000);
    // The stuck worker was ended; a fresh one answers (after loading its sessions).
    const out = await backend.run('churn@1', row(5));
    expect(out.probabilities!.dims).toEqual([1, 2]);
    await backend.close();
  });

  it('counts the run limit from when a worker starts the run, not while it waits for one', async () => {
    const backend = createPoolBackend({
      size: 1,
      runTimeoutMs: 300,
      workerFile: join(import.meta.dirname, '../../test/fixtures/hanging-worker.mjs'),
    });
    await backend.load([{ id: 'churn@1', path: join(MODELS_DIR, 'churn/1/model.onnx') }]);
    // Four runs of 200 ms on one worker: the last waits 600 ms, past the limit, but runs within it.
    const started = performance.now();
    const results = await Promise.allSettled([1, 2, 3, 4].map(() => backend.run('churn@1', row(-555))));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
    expect(performance.now() - started).toBeGreaterThan(780);
    await backend.close();
  });

  it('fails to load, naming the file, when a model cannot be read', async () => {
    const backend = createPoolBackend({ size: 1 });
    await expect(
      backend.load([{ id: 'x@1', path: join(MODELS_DIR, 'missing/1/model.onnx') }]),
    ).rejects.toThrow(/model\.onnx/);
  });

  it("a replace whose model does not load fails with the runtime's reason, and the old pool serves on", async () => {
    // Half a model file, as a copy cut short leaves it. Each worker reports the failure and waits; the new
    // pool is ended once all have reported (ending a worker inside session creation aborts the process).
    const dir = mkdtempSync(join(tmpdir(), 'corrupt-'));
    const whole = readFileSync(join(MODELS_DIR, 'mlp-large/1/model.onnx'));
    const cut = join(dir, 'model.onnx');
    writeFileSync(cut, whole.subarray(0, whole.length >> 1));
    const backend = createPoolBackend({ size: 2 });
    const churn = { id: 'churn@1', path: join(MODELS_DIR, 'churn/1/model.onnx') };
    const large = { id: 'mlp-large@1', path: join(MODELS_DIR, 'mlp-large/1/model.onnx') };
    await backend.load([churn]);
    for (let i = 0; i < 5; i++) {
      await expect(backend.replace([large, churn, { id: 'cut@1', path: cut }])).rejects.toThrow(
        /Protobuf parsing failed/,
      );
      expect((await backend.run('churn@1', row(i))).probabilities!.dims).toEqual([1, 2]);
    }
    expect(backend.stats().liveWorkers).toBe(2);
    await backend.close();
  });

  it('bounds the batches waiting for a worker: past maxQueue, ERR_QUEUE_FULL; the rest are answered', async () => {
    const backend = createPoolBackend({ size: 1, maxQueue: 2 });
    await backend.load([{ id: 'mlp@1', path: join(MODELS_DIR, 'mlp-large/1/model.onnx') }]);
    // 4,000-row batches of the largest model keep the one worker busy while the rest queue.
    const big = () => ({
      float_input: {
        type: 'float32' as const,
        dims: [4000, 64],
        data: new Float32Array(4000 * 64).fill(0.5),
      },
    });
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => backend.run('mlp@1', big())));
    const refused = results.filter((r) => r.status === 'rejected');
    expect(refused.length).toBeGreaterThan(0);
    for (const r of refused)
      expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'ERR_QUEUE_FULL', status: 503 });
    expect(results.filter((r) => r.status === 'fulfilled').length).toBeGreaterThanOrEqual(3); // one running, two queued
    await backend.close();
  });

  it('moves input buffers to the worker instead of copying them, and gets them back with the reply', async () => {
    const backend = createPoolBackend({ size: 1 });
    await backend.load([{ id: 'churn@1', path: join(MODELS_DIR, 'churn/1/model.onnx') }]);
    const inputs = row(5);
    const sent = inputs.float_input.data;
    await backend.run('churn@1', inputs);
    expect(sent.byteLength).toBe(0); // detached: the buffer moved
    // The tensor holds the same values again (the audit record reads them after the run).
    expect(inputs.float_input.data === sent).toBe(false);
    expect([...inputs.float_input.data]).toEqual([5, 50, 600, 12, 2, 1, 3]);
    await backend.close();
  });
});
