/**
 * The documentation pages work with no internet: a real Chromium (Debian's package) loads /docs and /redoc
 * from a real server while every request to a host other than loopback is aborted and recorded, then checks
 * that the operations of /openapi.json are rendered and that nothing outside the machine was asked for.
 *
 * Each page is loaded twice: from 127.0.0.1, and under a made-up public host name (docs.example.test) whose
 * requests the test forwards to the server. The second load is how a deployment is seen: some widgets only
 * reach out when the page is not on localhost (Swagger UI's online validator skips localhost spec URLs).
 *
 * Screenshots of the loopback loads go to test/.artifacts/ (git-ignored).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json, startTestServer } from './server.js';

const CHROMIUM = '/usr/bin/chromium';
// No silent skip, in CI or not: a missing browser is a failure with a way to fix it.
if (!existsSync(CHROMIUM)) {
  throw new Error(
    process.env.CI
      ? `${CHROMIUM} (Debian package chromium) is required in CI; .ci/run installs it`
      : `${CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium`,
  );
}

const ARTIFACTS = join(import.meta.dirname, '.artifacts');
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);
/** A name that is not loopback and resolves nowhere: the test itself answers for it, from the server. */
const PUBLIC_HOST = 'docs.example.test';
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
/** Paths that must be listed whatever else the document grows or loses. */
const MUST_LIST = ['/predict', '/predict/batch', '/v2/models/{name}/infer', '/health'];
const TIMEOUT = 60_000;
/** Rendering gets half of it, so that a page that never renders fails with what it lacked, not a timeout. */
const RENDER_TIMEOUT = 30_000;

type Operation = { method: string; path: string; summary: string };

let server: Awaited<ReturnType<typeof startTestServer>>;
let browser: Browser;
let operations: Operation[];

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  server = await startTestServer();
  const doc = await json(await server.get('/openapi.json'));
  operations = Object.entries<Record<string, { summary?: string }>>(doc.paths).flatMap(([path, item]) =>
    Object.entries(item)
      .filter(([method]) => METHODS.includes(method))
      .map(([method, op]) => ({ method, path, summary: op.summary ?? path })),
  );
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

/** A fresh page whose non-loopback requests are aborted; what was blocked, failed or thrown is recorded. */
async function openPage(host: 'loopback' | 'public') {
  const context: BrowserContext = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page: Page = await context.newPage();
  const blocked: string[] = [];
  const failed: string[] = [];
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.route('**/*', async (route) => {
    const url = new URL(route.request().url());
    if (!/^(https?|wss?):$/.test(url.protocol)) return route.continue(); // data:, blob:: nothing leaves
    if (LOOPBACK.has(url.hostname)) return route.continue();
    if (host === 'public' && url.hostname === PUBLIC_HOST) {
      const response = await route.fetch({ url: new URL(url.pathname + url.search, server.url).href });
      return route.fulfill({ response });
    }
    blocked.push(url.href);
    return route.abort('internetdisconnected');
  });
  const ours = (u: string) => {
    const { hostname } = new URL(u);
    return LOOPBACK.has(hostname) || hostname === PUBLIC_HOST;
  };
  page.on('requestfailed', (r) => {
    if (ours(r.url())) failed.push(`${r.url()}: ${r.failure()?.errorText}`);
  });
  page.on('response', (r) => {
    if (ours(r.url()) && r.status() >= 400) failed.push(`${r.url()}: HTTP ${r.status()}`);
  });
  /** Waits until `selector` matches once per operation; if it never does, says what the page went without. */
  const waitForOperations = async (selector: string) => {
    try {
      await page
        .locator(selector)
        .nth(operations.length - 1)
        .waitFor({ timeout: RENDER_TIMEOUT });
    } catch (e) {
      throw new Error(
        `${operations.length} × ${selector} not rendered in ${RENDER_TIMEOUT} ms; ` +
          `blocked: ${JSON.stringify(blocked)}, failed: ${JSON.stringify(failed)}, ` +
          `page errors: ${JSON.stringify(errors)}`,
        { cause: e },
      );
    }
    await page.waitForLoadState('networkidle');
  };
  const origin = host === 'public' ? `http://${PUBLIC_HOST}` : server.url;
  return { context, page, blocked, failed, errors, origin, waitForOperations };
}

const reEscape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const byKey = (ops: { method: string; path: string }[]) => ops.map((o) => `${o.method} ${o.path}`).sort();

async function checkSwagger(host: 'loopback' | 'public', screenshot?: string) {
  const { context, page, blocked, failed, errors, origin, waitForOperations } = await openPage(host);
  try {
    const res = await page.goto(`${origin}/docs`);
    expect(res?.status()).toBe(200);
    await waitForOperations('.swagger-ui .opblock');

    expect(await page.locator('.swagger-ui .opblock').count()).toBe(operations.length);
    const rendered = await page.$$eval('.swagger-ui .opblock', (blocks) =>
      blocks.map((b) => ({
        method: b.querySelector('.opblock-summary-method')?.textContent?.toLowerCase() ?? '',
        path: b.querySelector('.opblock-summary-path')?.getAttribute('data-path') ?? '',
      })),
    );
    expect(byKey(rendered)).toEqual(byKey(operations));
    for (const path of MUST_LIST) {
      expect(await page.locator(`.opblock-summary-path[data-path="${path}"]`).first().isVisible(), path).toBe(
        true,
      );
    }
    // Swagger UI lists resolver errors (a bad $ref, an unreadable spec) in this box.
    expect(await page.locator('.swagger-ui .errors-wrapper').count()).toBe(0);

    if (screenshot) await page.screenshot({ path: join(ARTIFACTS, screenshot), fullPage: true });
    // Together, so that one failure shows the rest: requests to hosts other than loopback (aborted),
    // requests to the server that failed or answered >= 400, and uncaught errors in the page.
    expect({ blocked, failed, errors }).toEqual({ blocked: [], failed: [], errors: [] });
  } finally {
    await context.close();
  }
}

async function checkRedoc(host: 'loopback' | 'public', screenshot?: string) {
  const { context, page, blocked, failed, errors, origin, waitForOperations } = await openPage(host);
  try {
    const res = await page.goto(`${origin}/redoc`);
    expect(res?.status()).toBe(200);
    // Each operation's endpoint box: <button><span class="http-verb post">post</span><span>/path</span>.
    await waitForOperations('redoc .http-verb');

    const rendered = await page.$$eval('redoc .http-verb', (verbs) =>
      verbs.map((v) => ({
        method: v.textContent?.trim().toLowerCase() ?? '',
        path: v.nextElementSibling?.textContent?.trim() ?? '',
      })),
    );
    expect(byKey(rendered)).toEqual(byKey(operations));
    // The side menu lists every operation by its summary.
    const menu = await page.$$eval('redoc li[role="menuitem"]', (items) =>
      items
        .filter((li) => li.querySelector(':scope > label .operation-type'))
        .map((li) => li.getAttribute('aria-label') ?? ''),
    );
    expect(menu.sort()).toEqual(operations.map((o) => o.summary).sort());
    for (const path of MUST_LIST) {
      const endpoint = page.locator('redoc .http-verb + *', { hasText: new RegExp(`^${reEscape(path)}$`) });
      expect(await endpoint.first().isVisible(), path).toBe(true);
    }
    // Redoc shows "Something went wrong..." in place of the docs when it cannot read the spec.
    expect(await page.locator('redoc').textContent()).not.toContain('Something went wrong');

    if (screenshot) await page.screenshot({ path: join(ARTIFACTS, screenshot), fullPage: true });
    // Together, so that one failure shows the rest: requests to hosts other than loopback (aborted),
    // requests to the server that failed or answered >= 400, and uncaught errors in the page.
    expect({ blocked, failed, errors }).toEqual({ blocked: [], failed: [], errors: [] });
  } finally {
    await context.close();
  }
}

describe('documentation pages with no internet', () => {
  it('/docs (Swagger UI) lists every operation and asks nothing of the internet', { timeout: TIMEOUT }, () =>
    checkSwagger('loopback', 'docs-offline.png'),
  );

  it('/redoc lists every operation and asks nothing of the internet', { timeout: TIMEOUT }, () =>
    checkRedoc('loopback', 'redoc-offline.png'),
  );

  it('/docs served under a public host name asks nothing of the internet', { timeout: TIMEOUT }, () =>
    checkSwagger('public'),
  );

  it('/redoc served under a public host name asks nothing of the internet', { timeout: TIMEOUT }, () =>
    checkRedoc('public'),
  );
});
