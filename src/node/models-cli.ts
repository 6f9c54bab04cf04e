/**
 * Model lifecycle from a shell, against a running server (its admin routes, with an admin key):
 *   npm run models -- promote NAME VERSION [STAGE] [--reason TEXT]   stage a version (default production)
 *   npm run models -- history NAME [VERSION]                          who changed which stage, when, why
 *   npm run models -- traffic NAME [POLICY_JSON | clear]              read or set the traffic policy
 *   npm run models -- shadow NAME                                     the shadow version's comparison
 * ONNX_SERVE_URL (default http://127.0.0.1:$PORT, PORT 8000) and ONNX_SERVE_API_KEY (an admin key).
 * `npm run models` with no command (or a directory) rebuilds the shipped models instead.
 */
import { STAGES } from '../core/lifecycle.js';

const usage = `usage:
  npm run models -- promote NAME VERSION [${STAGES.join('|')}] [--reason TEXT]
  npm run models -- history NAME [VERSION]
  npm run models -- traffic NAME [POLICY_JSON | clear]     e.g. '{"split":{"2":90,"3":10}}'
  npm run models -- shadow NAME
env: ONNX_SERVE_URL (default http://127.0.0.1:8000), ONNX_SERVE_API_KEY (a key with the admin scope)`;

export const LIFECYCLE_COMMANDS = ['promote', 'history', 'traffic', 'shadow'] as const;

async function call(method: string, path: string, body?: unknown): Promise<number> {
  const base = process.env.ONNX_SERVE_URL ?? `http://127.0.0.1:${process.env.PORT ?? 8000}`;
  const key = process.env.ONNX_SERVE_API_KEY;
  let res: Response;
  try {
    res = await fetch(new URL(path, base), {
      method,
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(key ? { authorization: `Bearer ${key}` } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch (err) {
    console.error(`cannot reach the server at ${base}: ${(err as Error).cause ?? err}`);
    return 1;
  }
  const text = await res.text();
  if (!res.ok) {
    let message = text;
    try {
      const e = JSON.parse(text).error;
      message = `${e.code}: ${e.message}`;
    } catch {}
    console.error(`${res.status} ${message}`);
    return 1;
  }
  console.log(JSON.stringify(JSON.parse(text), null, 2));
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const reasonAt = argv.indexOf('--reason');
  const reason = reasonAt >= 0 ? argv[reasonAt + 1] : undefined;
  const args = reasonAt >= 0 ? [...argv.slice(0, reasonAt), ...argv.slice(reasonAt + 2)] : argv;
  const [command, name, third] = args;
  const model = name ? encodeURIComponent(name) : '';
  switch (command) {
    case 'promote': {
      const stage = args[3] ?? 'production';
      if (!name || !third || !(STAGES as readonly string[]).includes(stage)) break;
      return call('POST', `/models/${model}/versions/${encodeURIComponent(third)}/stage`, {
        stage,
        ...(reason !== undefined ? { reason } : {}),
      });
    }
    case 'history':
      if (!name) break;
      if (third) return call('GET', `/models/${model}/versions/${encodeURIComponent(third)}/stage`);
      return call('GET', `/models/${model}/stages`);
    case 'traffic': {
      if (!name) break;
      if (third === undefined) return call('GET', `/models/${model}/traffic`);
      let policy: unknown = {};
      if (third !== 'clear') {
        try {
          policy = JSON.parse(third);
        } catch {
          console.error('POLICY_JSON is not JSON');
          return 2;
        }
      }
      return call('PUT', `/models/${model}/traffic`, policy);
    }
    case 'shadow':
      if (!name) break;
      return call('GET', `/models/${model}/shadow`);
  }
  console.error(usage);
  return 2;
}
