import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/node/config.js';
import { type RunningServer, startServer } from '../src/node/server.js';
import { modelsCopy } from './models-copy.js';

/** A fetch Response whose body tests read loosely: they check its shape with assertions. */
// biome-ignore lint/suspicious/noExplicitAny: test bodies are checked by assertions, not types
export type JsonResponse = Omit<Response, 'json'> & { json(): Promise<any> };

// biome-ignore lint/suspicious/noExplicitAny: see JsonResponse
export const json = (res: Response | JsonResponse): Promise<any> => res.json();

/** Requests to `base`; `sent` headers go with every one (an API key, say). */
export function client(base: string, sent: Record<string, string> = {}) {
  return {
    post: (path: string, body: unknown, headers: Record<string, string> = {}) =>
      fetch(base + path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...sent, ...headers },
        body: typeof body === 'string' ? body : JSON.stringify(body),
      }) as Promise<JsonResponse>,
    get: (path: string, headers: Record<string, string> = {}) =>
      fetch(base + path, { headers: { ...sent, ...headers } }) as Promise<JsonResponse>,
  };
}

/**
 * A real server on a free port with the real worker pool; env overrides as the process would read them.
 * `options` go to startServer (an in-memory span exporter, say).
 */
export async function startTestServer(
  env: Record<string, string> = {},
  options: Parameters<typeof startServer>[1] = {},
) {
  const auditDir = mkdtempSync(join(tmpdir(), 'audit-'));
  // Audit is off unless a test asks for it (its writer thread and store are not what most tests are about).
  const server = await startServer(
    loadConfig({
      PORT: '0',
      POOL_SIZE: '2',
      AUDIT: 'off',
      AUDIT_DIR: auditDir,
      // Servers in the test process write their access lines to its stdout: warnings and errors only.
      LOG_LEVEL: 'warn',
      ...(env.MODELS_DIR ? {} : { MODELS_DIR: modelsCopy(), DEFAULT_MODEL: env.DEFAULT_MODEL ?? 'churn' }),
      ...env,
    }),
    options,
  );
  try {
    await server.ready;
  } catch (err) {
    await server.close();
    throw err;
  }
  return Object.assign(server, client(server.url)) as RunningServer & ReturnType<typeof client>;
}
