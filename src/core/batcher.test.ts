import { describe, expect, it } from 'vitest';
import type { RunOptions } from './backend.js';
import { type BatcherOptions, type BatchReport, MicroBatcher } from './batcher.js';
import { ServeError } from './errors.js';
import type { Tensor } from './tensor.js';

const opts = (o: Partial<BatcherOptions> = {}): BatcherOptions => ({
  maxBatchRows: 64,
  maxQueueDelayMs: 2,
  maxQueuedRows: 1000,
  maxInFlight: 1,
  ...o,
});

/** A runner that doubles every value and records the batch sizes it was given. */
function doubler(delayMs = 0) {
  const batches: number[] = [];
  const bulk: boolean[] = [];
  const run = async (inputs: Record<string, Tensor>, o?: RunOptions) => {
    const x = inputs.x!;
    batches.push(x.dims[0]!);
    bulk.push(o?.bulk === true);
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
    const y = Float32Array.from(x.data as Float32Array, (v) => v * 2);
    return {
      y: { type: 'float32' as const, dims: [...x.dims], data: y },
      n: {
        type: 'float32' as const,
        dims: [x.dims[0]!],
        data: new Float32Array(x.dims[0]!).fill(x.dims[0]!),
      },
    };
  };
  return { batches, bulk, run };
}

const rowsTensor = (values: number[][]): Tensor => ({
  type: 'float32',
  dims: [values.length, values[0]!.length],
  data: Float32Array.from(values.flat()),
});

describe('MicroBatcher', () => {
  it('stacks only rows of the same inner shape, and still stacks those', async () => {
    const { batches, run } = doubler();
    const b = new MicroBatcher('m', run, opts({ maxQueueDelayMs: 5 }));
    const answers = await Promise.all([
      b.submit({ x: rowsTensor([[1, 2]]) }, 1),
      b.submit({ x: rowsTensor([[3, 4]]) }, 1),
      b.submit({ x: rowsTensor([[5, 6, 7]]) }, 1),
      b.submit({ x: rowsTensor([[8, 9, 10]]) }, 1),
    ]);
    expect(batches).toEqual([2, 2]);
    expect(answers.map((a) => Array.from(a.y!.data as Float32Array))).toEqual([
      [2, 4],
      [6, 8],
      [10, 12, 14],
      [16, 18, 20],
    ]);
  });

  it('packs concurrent requests into one batch and splits results back in order', async () => {
    const { batches, run } = doubler();
    const reports: BatchReport[] = [];
    const b = new MicroBatcher('m', run, opts(), (r) => reports.push(r));
    const inputs = Array.from({ length: 20 }, (_, i) =>
      i % 3 === 0
        ? [
            [i, -i],
            [i + 0.5, 1],
          ]
        : [[i, -i]],
    );
    const results = await Promise.all(inputs.map((rows) => b.submit({ x: rowsTensor(rows) }, rows.length)));
    expect(batches).toEqual([inputs.reduce((n, r) => n + r.length, 0)]);
    results.forEach((out, i) => {
      expect(Array.from(out.y!.data as Float32Array)).toEqual(inputs[i]!.flat().map((v) => v * 2));
      expect(out.y!.dims).toEqual([inputs[i]!.length, 2]);
    });
    expect(reports).toHaveLength(1);
    expect(reports[0]).toMatchObject({ rows: 27, requests: 20, failed: false });
  });

  it('counts rows, not requests, against maxBatchRows', async () => {
    const { batches, run } = doubler();
    const b = new MicroBatcher('m', run, opts({ maxBatchRows: 10, maxInFlight: 4 }));
    await Promise.all(Array.from({ length: 6 }, () => b.submit({ x: rowsTensor([[1], [2], [3], [4]]) }, 4)));
    // 4 + 4 fits, a third request of 4 would pass 10: three batches of 8 rows.
    expect(batches).toEqual([8, 8, 8]);
  });

  it('runs a request larger than maxBatchRows on its own, in bulk parts of maxBatchRows, joined in order', async () => {
    const { batches, bulk, run } = doubler();
    const b = new MicroBatcher('m', run, opts({ maxBatchRows: 4 }));
    const big = Array.from({ length: 9 }, (_, i) => [i, -i]);
    const small = b.submit({ x: rowsTensor([[100, 100]]) }, 1);
    const out = await b.submit({ x: rowsTensor(big) }, 9);
    await small;
    // The waiting small row ran first as an ordinary batch; the big request went in three bulk parts.
    expect(batches).toEqual([1, 4, 4, 1]);
    expect(bulk).toEqual([false, true, true, true]);
    expect(out.y!.dims).toEqual([9, 2]);
    expect(Array.from(out.y!.data as Float32Array)).toEqual(big.flat().map((v) => v * 2));
    expect(Array.from(out.n!.data as Float32Array)).toEqual([4, 4, 4, 4, 4, 4, 4, 4, 1]);
  });

  it('waits at most maxQueueDelayMs for a lone request', async () => {
    const { batches, run } = doubler();
    const b = new MicroBatcher('m', run, opts({ maxQueueDelayMs: 5 }));
    const started = performance.now();
    await b.submit({ x: rowsTensor([[1]]) }, 1);
    const waited = performance.now() - started;
    expect(batches).toEqual([1]);
    expect(waited).toBeGreaterThanOrEqual(4);
  });

  it('answers 504 to rows whose deadline passes while they wait, and never runs them', async () => {
    const { batches, run } = doubler(200);
    const b = new MicroBatcher('m', run, opts({ maxQueueDelayMs: 0, maxInFlight: 1 }));
    const first = b.submit({ x: rowsTensor([[1]]) }, 1);
    await new Promise((r) => setTimeout(r, 10)); // the first batch is running: the next rows wait
    const started = performance.now();
    const late = b.submit({ x: rowsTensor([[2], [3]]) }, 2, performance.now() + 50);
    const patient = b.submit({ x: rowsTensor([[4]]) }, 1);
    await expect(late).rejects.toMatchObject({ code: 'ERR_DEADLINE_EXCEEDED', status: 504 });
    expect(performance.now() - started).toBeLessThan(180); // answered at its deadline, not when the slot freed
    expect(b.queuedRows).toBe(1); // its rows left the queue
    await first;
    expect(Array.from((await patient).y!.data as Float32Array)).toEqual([8]);
    expect(batches).toEqual([1, 1]); // the expired rows never ran
  });

  it('refuses a request larger than the queue bound with 413: retrying could never help', async () => {
    const { run } = doubler();
    const b = new MicroBatcher('m', run, opts({ maxQueuedRows: 3 }));
    await expect(b.submit({ x: rowsTensor([[1], [2], [3], [4]]) }, 4)).rejects.toMatchObject({
      code: 'ERR_TOO_MANY_ROWS',
      status: 413,
    });
  });

  it('refuses rows past maxQueuedRows with ERR_QUEUE_FULL and a retry hint', async () => {
    const { run } = doubler(20);
    const b = new MicroBatcher('m', run, opts({ maxQueuedRows: 3, maxBatchRows: 2 }));
    const first = b.submit({ x: rowsTensor([[1], [2]]) }, 2); // full batch: dispatched, no longer queued
    const second = b.submit({ x: rowsTensor([[3], [4]]) }, 2); // waits: the one slot is busy
    const third = b.submit({ x: rowsTensor([[5], [6]]) }, 2);
    await expect(third).rejects.toMatchObject({ code: 'ERR_QUEUE_FULL', status: 503, retryAfterSeconds: 1 });
    await expect(third).rejects.toBeInstanceOf(ServeError);
    await Promise.all([first, second]);
    expect(b.queuedRows).toBe(0);
  });

  it("fails only the failing batch's requests", async () => {
    let calls = 0;
    const b = new MicroBatcher(
      'm',
      async (inputs) => {
        calls++;
        if ((inputs.x!.data as Float32Array)[0] === -1) throw new Error('boom');
        return { y: inputs.x! };
      },
      opts({ maxBatchRows: 2, maxInFlight: 2 }),
    );
    const bad = b.submit({ x: rowsTensor([[-1]]) }, 1);
    const badMate = b.submit({ x: rowsTensor([[7]]) }, 1);
    const good = b.submit({ x: rowsTensor([[8]]) }, 1);
    const goodMate = b.submit({ x: rowsTensor([[9]]) }, 1);
    await expect(bad).rejects.toThrow('boom');
    await expect(badMate).rejects.toThrow('boom');
    expect(Array.from((await good).y!.data as Float32Array)).toEqual([8]);
    expect(Array.from((await goodMate).y!.data as Float32Array)).toEqual([9]);
    expect(calls).toBe(2);
  });

  it('grows batches while every slot is busy instead of queueing small ones', async () => {
    const batches: number[] = [];
    let started!: () => void;
    const firstStarted = new Promise<void>((r) => {
      started = r;
    });
    let release!: () => void;
    const hold = new Promise<void>((r) => {
      release = r;
    });
    const b = new MicroBatcher(
      'm',
      async (inputs) => {
        batches.push(inputs.x!.dims[0]!);
        if (batches.length === 1) {
          started();
          await hold; // the one slot stays busy until released
        }
        return { y: inputs.x! };
      },
      opts({ maxQueueDelayMs: 0, maxInFlight: 1 }),
    );
    const first = b.submit({ x: rowsTensor([[0]]) }, 1);
    await firstStarted;
    const rest = Array.from({ length: 10 }, (_, i) => b.submit({ x: rowsTensor([[i + 1]]) }, 1));
    await new Promise((r) => setTimeout(r, 5)); // their delay has passed: they wait for the slot, not the timer
    release();
    await Promise.all([first, ...rest]);
    expect(batches).toEqual([1, 10]);
  });

  it('refuses outputs whose row count does not match the batch', async () => {
    const b = new MicroBatcher('m', async () => ({ y: rowsTensor([[1]]) }), opts());
    const reqs = [b.submit({ x: rowsTensor([[1]]) }, 1), b.submit({ x: rowsTensor([[2]]) }, 1)];
    await expect(reqs[0]).rejects.toThrow(/1 rows for a batch of 2/);
    await expect(reqs[1]).rejects.toThrow();
  });
});
