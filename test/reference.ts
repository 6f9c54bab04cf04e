/** Node's access to the reference: reads the shipped model files from disk. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type ReferenceModel, referenceFromBytes } from './reference-core.js';

export { argmax, type ReferenceModel, rows } from './reference-core.js';

export const MODELS_DIR = join(import.meta.dirname, '..', 'models');

export function referenceModel(name: string, version: string): ReferenceModel {
  const bytes = readFileSync(join(MODELS_DIR, name, version, 'model.onnx'));
  const meta = JSON.parse(readFileSync(join(MODELS_DIR, name, version, 'model.json'), 'utf8'));
  return referenceFromBytes(bytes, meta);
}
