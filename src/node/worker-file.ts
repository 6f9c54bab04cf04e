import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * A compiled worker script under workers/, whether the caller runs compiled (dist/) or from source under a
 * test runner (then the compiled copy in dist/ is used: worker threads cannot run TypeScript).
 */
export function compiledWorker(name: string): string {
  const here = import.meta.url;
  const url = here.endsWith('.ts')
    ? new URL(`../../dist/workers/${name}`, here)
    : new URL(`../../workers/${name}`, here);
  const file = fileURLToPath(url);
  if (!existsSync(file)) throw new Error(`worker script ${file} is missing: run npm run build`);
  return file;
}
