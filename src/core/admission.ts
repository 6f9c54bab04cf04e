/**
 * Admission control for prediction requests, decided when the headers arrive, before a body is read or
 * parsed: the work a refused request would cost (reading and parsing megabytes) is never paid.
 *
 * - Every prediction request counts against `maxInFlight` from arrival to answer; past it, 503
 *   ERR_OVERLOADED at once with Retry-After, so the requests already accepted keep a bounded latency
 *   instead of every request waiting behind an unbounded crowd.
 * - Heavy requests (a declared body of `heavyBodyBytes` or more, a body of unknown length, or a compressed
 *   one, whose size is known only once inflated) also take one
 *   of `heavyConcurrency` places, waiting in line (at most `heavyMaxWaiting`) for one. Parsing a 3 MB body
 *   and answering 10,000 rows hold the event loop for tens of ms each; a few of those at a time leave room
 *   for small requests between them, where twenty at once starve them for seconds.
 *
 * Written here rather than taken from a semaphore library: it must refuse (not queue) past a bound, drop
 * waiters at their deadline, and cost nothing measurable for the small requests that never wait.
 */
import type { Context, MiddlewareHandler } from 'hono';
import { ServeError } from './errors.js';
import { bodyTooLarge, timeoutHeader, yieldTurn } from './http.js';

export interface AdmissionOptions {
  /** Most prediction requests in progress at once; past it they are refused. */
  maxInFlight: number;
  /** A body of at least this many bytes (or of undeclared length) makes a request heavy. */
  heavyBodyBytes: number;
  /** Most heavy requests in progress at once. */
  heavyConcurrency: number;
  /** Most heavy requests waiting for a place; past it they are refused. */
  heavyMaxWaiting: number;
  /**
   * Most ms a heavy request waits for a place (less if its X-Timeout-Ms asks), then 504; and most ms it
   * holds one: a client trickling its body keeps its connection until the HTTP request timeout, but not
   * the place others wait for.
   */
  maxWaitMs: number;
  /** Bodies declared larger are refused (413) at once, not after waiting in line. */
  maxBodyBytes?: number;
  /**
   * Most ms a heavy request's next costly step (parsing, answering) waits while small requests are in
   * progress. Small requests then meet at most the one step already running; heavy ones still progress.
   * 0 = only let already-waiting callbacks run first.
   */
  heavyYieldMs: number;
}

export interface AdmissionStats {
  inFlight: number;
  heavyActive: number;
  heavyWaiting: number;
}

interface Waiter {
  admit: () => void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

export const overloaded = (message: string) =>
  new ServeError('ERR_OVERLOADED', message, { retryAfterSeconds: 1 });

/** Why a request is refused at the in-flight bound (also said by a runtime that refuses it earlier). */
export const overloadedMessage = (inFlight: number) =>
  `${inFlight} prediction requests are in progress, the most this server takes`;

export type Admission = ReturnType<typeof createAdmission>;

/** The context key set on a request admitted as heavy. */
const HEAVY = 'admittedHeavy';

declare module 'hono' {
  interface ContextVariableMap {
    [HEAVY]?: boolean;
  }
}

export function createAdmission(opts: AdmissionOptions) {
  let inFlight = 0;
  let heavyActive = 0;
  const waiting: Waiter[] = [];
  /** Small requests in progress, and heavy steps waiting for them to finish. */
  let light = 0;
  const givingWay = new Set<() => void>();
  const lightDone = () => {
    if (--light > 0 || givingWay.size === 0) return;
    for (const resume of givingWay) resume();
    givingWay.clear();
  };

  const releaseHeavy = () => {
    const next = waiting.shift();
    if (next) {
      // The place passes straight to the next in line.
      clearTimeout(next.timer);
      next.admit();
    } else heavyActive--;
  };

  /** Wait in line for a heavy place; leave the line at the deadline (504) or when the client goes (499). */
  const waitForPlace = (ms: number, signal: AbortSignal | undefined) =>
    new Promise<void>((resolve, reject) => {
      const leave = (err: ServeError) => {
        clearTimeout(waiter.timer);
        signal?.removeEventListener('abort', onAbort);
        const i = waiting.indexOf(waiter);
        if (i >= 0) waiting.splice(i, 1);
        reject(err);
      };
      const onAbort = () =>
        leave(new ServeError('ERR_CLIENT_CLOSED', 'the client went away while waiting for a turn'));
      const waiter: Waiter = {
        admit: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        timer: setTimeout(
          () =>
            leave(
              new ServeError(
                'ERR_DEADLINE_EXCEEDED',
                `waited ${Math.round(ms)} ms for a turn among large requests`,
              ),
            ),
          ms,
        ),
      };
      waiting.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });

  const middleware: MiddlewareHandler = async (c, next) => {
    if (c.req.method !== 'POST') return next();
    // What would be refused anyway is refused now, not after a wait in line.
    const asked = timeoutHeader(c);
    if (inFlight >= opts.maxInFlight) {
      throw overloaded(overloadedMessage(inFlight));
    }
    const declared = c.req.header('content-length');
    if (declared !== undefined && opts.maxBodyBytes !== undefined && Number(declared) > opts.maxBodyBytes) {
      throw bodyTooLarge(opts.maxBodyBytes);
    }
    // A compressed body's size is known only once inflated (up to the body limit): it counts as large.
    const compressed = (c.req.header('content-encoding') ?? 'identity').trim().toLowerCase() !== 'identity';
    const heavy = declared === undefined || compressed || Number(declared) >= opts.heavyBodyBytes;
    if (heavy && heavyActive >= opts.heavyConcurrency && waiting.length >= opts.heavyMaxWaiting) {
      throw overloaded(
        `${heavyActive} large requests are in progress and ${waiting.length} waiting, the most this server takes`,
      );
    }
    inFlight++;
    try {
      if (!heavy) {
        light++;
        try {
          return await next();
        } finally {
          lightDone();
        }
      }
      c.set(HEAVY, true);
      const limit = asked === undefined ? opts.maxWaitMs : Math.min(asked, opts.maxWaitMs);
      if (heavyActive < opts.heavyConcurrency) heavyActive++;
      else await waitForPlace(limit, c.req.raw.signal);
      // The place is given back when the request ends, or at its deadline if it is still going then.
      let held = true;
      const giveBack = () => {
        if (!held) return;
        held = false;
        clearTimeout(expiry);
        releaseHeavy();
      };
      const expiry = setTimeout(giveBack, limit);
      try {
        return await next();
      } finally {
        giveBack();
      }
    } finally {
      inFlight--;
    }
  };

  /**
   * Before a request's next costly step. A heavy one lets the small requests in progress finish first
   * (bounded by heavyYieldMs); a small one only lets waiting callbacks run: it counts among the small
   * requests itself, so waiting for them would always wait the whole bound.
   */
  const giveWay = (c?: Context): Promise<void> => {
    if (light === 0 || opts.heavyYieldMs <= 0 || c?.get(HEAVY) !== true) return yieldTurn();
    return new Promise((resolve) => {
      const resume = () => {
        clearTimeout(timer);
        givingWay.delete(resume);
        resolve();
      };
      const timer = setTimeout(resume, opts.heavyYieldMs);
      givingWay.add(resume);
    });
  };

  return {
    middleware,
    giveWay,
    stats: (): AdmissionStats => ({ inFlight, heavyActive, heavyWaiting: waiting.length }),
  };
}
