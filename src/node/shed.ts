/**
 * Refusals at the in-flight bound, answered by Node's request listener before the request becomes a
 * fetch Request and runs through the app's middleware. Under overload refusals are most of the work: at
 * 1,000 connections of clients that resend at once, the app answered ~10,000 refusals/s on this machine,
 * about what it answers predictions, while a 503 written here costs a third of that; every ms a refusal
 * costs is a ms the accepted requests wait behind it in the event loop.
 *
 * The app's admission control (src/core/admission.ts) still decides everything else (the line for large
 * bodies, body limits) and is the bound on runtimes without this listener. The answer is the app's own:
 * the same status, code, message, error shape (the Open Inference Protocol's on /v2), Retry-After and
 * security headers, and it is counted and logged as the app counts and logs refusals (every 5xx has an
 * access line). It comes before keys and rate limits: a caller refused here was never let in, so there is
 * nothing to check, and it is not counted against a rate limit. With CORS configured the app answers (its
 * CORS headers go on every response).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { overloadedMessage } from '../core/admission.js';
import { SECURITY_HEADERS } from '../core/app.js';
import type { Logger } from '../core/logger.js';
import type { AppMetrics } from '../core/metrics.js';

/** The prediction routes (as the app's metrics name them) by request path. */
const PREDICTION = /^\/(?:predict(\/batch)?|v2\/models\/[^/]+(\/versions\/[^/]+)?\/infer)$/;

function routeOf(path: string): string | undefined {
  const m = PREDICTION.exec(path);
  if (!m) return undefined;
  if (path.startsWith('/predict')) return m[1] ? '/predict/batch' : '/predict';
  return m[2] ? '/v2/models/:name/versions/:version/infer' : '/v2/models/:name/infer';
}

export interface ShedOptions {
  /** Prediction requests in progress now, and the most taken. */
  inFlight: () => number;
  maxInFlight: number;
  /** True while draining: the answer also closes the connection. */
  draining: () => boolean;
  /** CORS configured: every request goes to the app, which answers it with CORS headers. */
  cors: boolean;
  metrics: AppMetrics;
  logger: Logger;
}

/** A listener's front: answers (and returns true) when the request is refused here. */
export function createShedder(opts: ShedOptions) {
  const security = SECURITY_HEADERS(false);
  const logged = opts.logger.isLevelEnabled('info');
  return (req: IncomingMessage, res: ServerResponse): boolean => {
    if (req.method !== 'POST' || opts.cors) return false;
    const inFlight = opts.inFlight();
    if (inFlight < opts.maxInFlight) return false;
    const url = req.url ?? '';
    const q = url.indexOf('?');
    const route = routeOf(q === -1 ? url : url.slice(0, q));
    if (route === undefined) return false;
    const started = performance.now();
    const message = overloadedMessage(inFlight);
    const body = JSON.stringify(
      route.startsWith('/v2') ? { error: message } : { error: { code: 'ERR_OVERLOADED', message } },
    );
    for (const [name, value] of security) res.setHeader(name, value);
    // The body is left unread: a large one (or one of unknown length) is not worth reading to keep the
    // connection, as the app decides too.
    const length = req.headers['content-length'];
    const large =
      length === undefined ? req.headers['transfer-encoding'] !== undefined : Number(length) > 64 * 1024;
    if (large || opts.draining()) res.setHeader('Connection', 'close');
    res.writeHead(503, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
      'Retry-After': '1',
    });
    res.end(body);
    const ms = performance.now() - started;
    opts.metrics.request(route, 'POST', 503, ms / 1000);
    opts.metrics.error('ERR_OVERLOADED');
    if (logged) {
      // The app's access line for a refusal, field for field.
      const id = req.headers['x-request-id'];
      opts.logger.info(
        {
          request_id: typeof id === 'string' ? id : null,
          method: 'POST',
          route,
          status: 503,
          latency_ms: Math.round(ms * 1000) / 1000,
          model: null,
          version: null,
          rows: null,
          cache: null,
          api_key: null,
          error: 'ERR_OVERLOADED',
        },
        'request',
      );
    }
    return true;
  };
}
