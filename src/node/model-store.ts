import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ModelMetadata } from '../core/registry.js';
import { compareVersions } from '../core/registry.js';

/** One model file found on disk, laid out as Triton's repository: <dir>/<name>/<version>/model.onnx. */
export interface StoredModel {
  name: string;
  version: string;
  path: string;
  sha256: string;
  metadata: ModelMetadata | undefined;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

async function subdirs(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  return entries.filter((e) => e.isDirectory() && NAME.test(e.name)).map((e) => e.name);
}

/** Every model in `dir` (or only model `only`, when given: an empty list if it has no directory). */
export async function scanModelRepository(dir: string, only?: string): Promise<StoredModel[]> {
  if (!existsSync(dir)) throw new Error(`MODELS_DIR ${dir} does not exist`);
  const found: StoredModel[] = [];
  const names =
    only === undefined
      ? (await subdirs(dir)).sort()
      : NAME.test(only) && existsSync(join(dir, only))
        ? [only]
        : [];
  for (const name of names) {
    const versions = (await subdirs(join(dir, name))).sort(compareVersions);
    for (const version of versions) {
      const path = join(dir, name, version, 'model.onnx');
      if (!existsSync(path)) continue;
      const bytes = await readFile(path);
      const sha256 = createHash('sha256').update(bytes).digest('hex');
      const metaPath = join(dir, name, version, 'model.json');
      let metadata: ModelMetadata | undefined;
      if (existsSync(metaPath)) {
        try {
          metadata = JSON.parse(await readFile(metaPath, 'utf8')) as ModelMetadata;
        } catch (err) {
          throw new Error(`${metaPath} is not valid JSON: ${(err as Error).message}`);
        }
      }
      found.push({ name, version, path, sha256, metadata });
    }
  }
  if (found.length === 0 && only === undefined) {
    throw new Error(`MODELS_DIR ${dir} holds no <name>/<version>/model.onnx`);
  }
  return found;
}
