import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The project's root, from this file in src/node (tsx) or dist/src/node (built). */
export function projectRoot(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return /[\\/]dist[\\/]src[\\/]node$/.test(here) ? resolve(here, '../../..') : resolve(here, '../..');
}
