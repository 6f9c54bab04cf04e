/** The documentation pages' files, read from installed copies (no CDN): Swagger UI and Redoc. */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { projectRoot } from './paths.js';

const TYPES: Record<string, string> = {
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.png': 'image/png',
};

/** Where each file the core asks for lives; read once, then held in memory. */
export function createDocsAssets() {
  const swagger = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
  const paths: Record<string, string> = {
    'swagger-ui.css': join(swagger, 'swagger-ui.css'),
    'swagger-ui-bundle.js': join(swagger, 'swagger-ui-bundle.js'),
    'favicon-32x32.png': join(swagger, 'favicon-32x32.png'),
    'redoc.standalone.js': join(projectRoot(), 'vendor', 'redoc', 'redoc.standalone.js'),
  };
  const held = new Map<string, Promise<Uint8Array>>();
  return async (file: string) => {
    const path = paths[file];
    if (!path) return undefined;
    let bytes = held.get(file);
    if (!bytes) {
      bytes = readFile(path);
      held.set(file, bytes);
      bytes.catch(() => held.delete(file));
    }
    return {
      body: await bytes,
      type: TYPES[file.slice(file.lastIndexOf('.'))] ?? 'application/octet-stream',
    };
  };
}
