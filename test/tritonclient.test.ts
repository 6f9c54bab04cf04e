/**
 * Triton's own Python client (`tritonclient[http]==2.59.0`, unmodified) against a real server: metadata,
 * configuration, repository index, load and unload, statistics, and inference with JSON and binary tensors, compressed or
 * not, whose outputs equal /predict's for the same rows. The client lives in `.venv-clients` (`.ci/run`
 * creates it from ../shared/wheelhouse); without it this test fails, it never skips.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKey, keyDigestHex, keyLine } from '../src/core/access.js';
import { json, startTestServer } from './server.js';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..');
const PYTHON = join(ROOT, '.venv-clients', 'bin', 'python');
const SCRIPT = join(import.meta.dirname, 'fixtures', 'tritonclient-check.py');

const ROWS = [
  [24, 75.5, 1800, 12, 2, 1, 4.5],
  [48, 120.0, 5760, 24, 4, 2, 3.5],
  [3, 99.9, 300, 1, 1, 7, 1.5],
];

let server: Awaited<ReturnType<typeof startTestServer>>;
// biome-ignore lint/suspicious/noExplicitAny: the client's results, checked by assertions
let got: any;
const MISSING =
  `${PYTHON} is missing: create it as .ci/run does (python3 -m venv .venv-clients && ` +
  '.venv-clients/bin/pip install --find-links ../shared/wheelhouse "tritonclient[http]==2.59.0")';

beforeAll(async () => {
  // Without the client every test below fails (the first says why): never skipped.
  if (!existsSync(PYTHON)) return;
  // Load and unload are admin routes: the client sends the admin key as a header, as a deployment would.
  const adminKey = generateKey();
  server = await startTestServer({ API_KEYS: keyLine('ops', ['admin'], keyDigestHex(adminKey)) });
  const { stdout } = await run(PYTHON, [SCRIPT, server.url.replace(/^http:\/\//, ''), adminKey], {
    timeout: 60_000,
  });
  got = JSON.parse(stdout);
}, 90_000);
afterAll(async () => {
  await server?.close();
});

describe("Triton's Python client, unmodified", () => {
  it('is installed where .ci/run puts it', () => {
    expect(existsSync(PYTHON), MISSING).toBe(true);
  });

  it('reads server and model metadata, health and readiness', async () => {
    expect(got.live).toBe(true);
    expect(got.ready).toBe(true);
    expect(got.model_ready).toBe(true);
    expect(got.server_metadata.name).toBe('onnx-serve');
    expect(got.server_metadata.extensions).toEqual(
      expect.arrayContaining(['binary_tensor_data', 'model_configuration', 'statistics']),
    );
    expect(got.model_metadata).toMatchObject({
      name: 'churn',
      versions: ['1', '2'],
      platform: 'onnxruntime_onnx',
      inputs: [{ name: 'float_input', datatype: 'FP32', shape: [-1, 7] }],
    });
    expect(got.model_metadata_v1.name).toBe('churn');
  });

  it('reads the model configuration and the repository index', async () => {
    expect(got.model_config).toMatchObject({
      name: 'churn',
      platform: 'onnxruntime_onnx',
      max_batch_size: 512,
      input: [{ name: 'float_input', data_type: 'TYPE_FP32', dims: [7] }],
      dynamic_batching: { max_queue_delay_microseconds: 1000 },
      version_policy: { all: {} },
    });
    expect(got.model_config_v1.output.map((o: { name: string }) => o.name)).toEqual([
      'label',
      'probabilities',
    ]);
    const index = await json(await fetch(`${server.url}/v2/repository/index`, { method: 'POST' }));
    expect(got.repository_index).toEqual(index);
    expect(got.repository_index).toContainEqual({ name: 'churn', version: '2', state: 'READY', reason: '' });
  });

  it("infers with JSON and with binary tensors, compressed or not, and every answer equals /predict's", async () => {
    const predict = await json(
      await server.post('/predict', { features: ROWS, model: 'churn', version: '2', use_cache: false }),
    );
    const want = predict.predictions as { prediction: number; probabilities: Record<string, number> }[];
    for (const key of [
      'infer_json',
      'infer_binary',
      'infer_json_in_binary_out',
      'infer_gzip',
      'infer_deflate',
      'infer_timeout',
    ]) {
      const r = got[key];
      expect(r.response.model_version, key).toBe('2');
      expect(r.label, key).toEqual(want.map((p) => p.prediction));
      r.probabilities.forEach((pair: number[], i: number) => {
        // /predict rounds to 7 decimals; the tensors are float32.
        expect(Math.abs(pair[0]! - want[i]!.probabilities.stays!), key).toBeLessThanOrEqual(5.1e-8);
        expect(Math.abs(pair[1]! - want[i]!.probabilities.churns!), key).toBeLessThanOrEqual(5.1e-8);
      });
    }
    const large = got.infer_gzip_large;
    expect(large.label).toEqual(Array.from({ length: 100 }, () => want.map((p) => p.prediction)).flat());
    expect(large.probabilities.slice(0, 3)).toEqual(got.infer_binary.probabilities);
    // The outputs came back as the client asked: binary by default, JSON when it said binary_data=False.
    for (const o of got.infer_binary.response.outputs)
      expect(o.parameters.binary_data_size).toBeGreaterThan(0);
    for (const o of got.infer_json.response.outputs) expect(o.data).toBeDefined();
    const v1 = await json(
      await server.post('/predict', { features: ROWS, model: 'churn', version: '1', use_cache: false }),
    );
    expect(got.infer_v1.response.model_version).toBe('1');
    expect(got.infer_v1.label).toEqual(v1.predictions.map((p: { prediction: number }) => p.prediction));
  });

  it('reads statistics whose counts rose with its own inferences', async () => {
    const [before] = got.stats_before.model_stats;
    const [after] = got.stats_after.model_stats;
    // Seven inferences on version 2 (six of three rows, one of 300), none from the cache.
    expect(after.inference_stats.success.count - before.inference_stats.success.count).toBe(7);
    expect(after.inference_count - before.inference_count).toBe(18 + 300);
    expect(after.execution_count - before.execution_count).toBeGreaterThanOrEqual(2);
    expect(after.execution_count - before.execution_count).toBeLessThanOrEqual(7);
    expect(after.inference_stats.queue.count - before.inference_stats.queue.count).toBe(7);
    expect(after.inference_stats.compute_infer.ns).toBeGreaterThan(before.inference_stats.compute_infer.ns);
    expect(after.last_inference).toBeGreaterThan(0);
    expect(got.stats_all.model_stats.length).toBe(got.repository_index.length);
  });

  it('unloads and loads a model through the repository extension, and sees it refused, then serving', async () => {
    expect(got.server_metadata.extensions).toContain('model_repository');
    expect(got.unload_without_key.status).toBe('401');
    expect(got.iris_ready_unloaded).toBe(false);
    expect(got.index_unloaded).toEqual([
      { name: 'iris', version: '1', state: 'UNAVAILABLE', reason: 'unloaded' },
    ]);
    expect(got.iris_infer_unloaded).toEqual({
      status: '503',
      message: expect.stringMatching(/'iris' is unloaded/),
    });
    expect(got.iris_ready_loaded).toBe(true);
    const predict = await json(
      await server.post('/predict', { features: [5.1, 3.5, 1.4, 0.2], model: 'iris' }),
    );
    expect(got.iris_infer_loaded).toEqual([predict.prediction]);
  });

  it('sees errors as the exceptions Triton clients expect, with a message naming the problem', async () => {
    expect(got.unknown_model).toEqual({ status: '404', message: expect.stringMatching(/no-such-model/) });
    expect(got.bad_shape.status).toBe('422');
    expect(got.bad_shape.message).toMatch(/inputs\[0\]\.shape/);
  });
});
