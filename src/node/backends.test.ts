import { join } from 'node:path';
import { runBackendContract } from '../../test/cases/backend.case.js';
import { MODELS_DIR, referenceModel } from '../../test/reference.js';
import { createOrtBackend } from './ort-backend.js';
import { createPoolBackend } from './pool-backend.js';

const models = ['churn/1', 'churn/2', 'classifier-10/1', 'fraud/1', 'iris/1', 'mlp-large/1'].map((m) => ({
  id: m.replace('/', '@'),
  path: join(MODELS_DIR, m, 'model.onnx'),
}));

runBackendContract({
  name: 'onnxruntime-node in-process',
  models,
  reference: referenceModel,
  async create(ms) {
    const backend = createOrtBackend();
    return { backend, signatures: await backend.load(ms) };
  },
});

runBackendContract({
  name: 'piscina pool of onnxruntime-node workers',
  models,
  reference: referenceModel,
  async create(ms) {
    const backend = createPoolBackend({ size: 2 });
    return { backend, signatures: await backend.load(ms) };
  },
});
