/** Operating the server: the index, Prometheus metrics, the OpenAPI document and its two readers. */
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { ServeError } from '../errors.js';
import { errorResponse, json, publicAccess, register } from '../openapi.js';
import * as S from '../schemas.js';
import type { RouteContext } from './context.js';

const tags = ['operations'];

/** The static files the documentation pages load; the entry point supplies their bytes (deps.docsAsset). */
export const DOCS_FILES = [
  'swagger-ui.css',
  'swagger-ui-bundle.js',
  'redoc.standalone.js',
  'favicon-32x32.png',
] as const;

/** A documentation page. Relative URLs, so it also works behind a proxy that mounts the server under a prefix. */
const page = (head: string, body: string) => `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>onnx-serve API</title>
<link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png">
${head}
</head>
<body>
${body}
</body>
</html>
`;

const SWAGGER_PAGE = page(
  '<link rel="stylesheet" href="docs/assets/swagger-ui.css">',
  `<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script src="docs/assets/swagger-init.js"></script>`,
);

const SWAGGER_INIT = `window.ui = SwaggerUIBundle({
  url: new URL('openapi.json', document.baseURI).href,
  dom_id: '#swagger-ui',
  deepLinking: true,
});
`;

const REDOC_PAGE = page(
  `<!-- Redoc 2.5.4 always loads its "API docs by Redocly" logo from a CDN: images come from this server only. -->
<meta http-equiv="Content-Security-Policy" content="img-src 'self' data: blob:">
<style>body { margin: 0; padding: 0; }</style>`,
  `<redoc spec-url="openapi.json"></redoc>
<script src="docs/assets/redoc.standalone.js"></script>`,
);

const html = (description: string) => ({
  description,
  content: { 'text/html': { schema: z.string() } },
});

export function operationRoutes(ctx: RouteContext, document: () => unknown) {
  const { deps, config } = ctx;
  const { registry, metrics } = deps;
  const app = new OpenAPIHono();

  register(
    app,
    createRoute({
      method: 'get',
      path: '/',
      ...publicAccess,
      tags,
      summary: 'Server name, version, default model and main routes',
      responses: { 200: json(S.ServerInfo, 'Server information') },
    }),
    (c) =>
      c.json({
        name: 'onnx-serve',
        version: config.serverVersion,
        default_model: registry.defaultModel ?? null,
        endpoints: [
          '/predict',
          '/predict/batch',
          '/models',
          '/health',
          '/metrics',
          '/v2',
          '/docs',
          '/redoc',
          '/openapi.json',
        ],
      }),
  );

  register(
    app,
    createRoute({
      method: 'get',
      path: '/metrics',
      ...publicAccess,
      tags,
      summary: 'Prometheus metrics',
      responses: {
        200: { description: 'Prometheus text format', content: { 'text/plain': { schema: z.string() } } },
      },
    }),
    async (c) => {
      const { contentType, body } = await metrics.render();
      return c.body(body, 200, { 'Content-Type': contentType });
    },
  );

  register(
    app,
    createRoute({
      method: 'get',
      path: '/openapi.json',
      ...publicAccess,
      tags,
      summary: 'This document (OpenAPI 3.1)',
      responses: {
        200: json(z.object({ openapi: z.string() }).catchall(z.unknown()), 'The OpenAPI document'),
      },
    }),
    (c) => c.json(document()),
  );

  for (const [path, name, page] of [
    ['/docs', 'Swagger UI', SWAGGER_PAGE],
    ['/redoc', 'Redoc', REDOC_PAGE],
  ] as const) {
    register(
      app,
      createRoute({
        method: 'get',
        path,
        tags,
        ...publicAccess,
        summary: `${name}, served from this server (no internet needed)`,
        responses: { 200: html(name), ...errorResponse(404, 'Not served by this runtime (Workers)') },
      }),
      (c) => (deps.docsAsset ? c.html(page) : noDocs()),
    );
  }

  register(
    app,
    createRoute({
      method: 'get',
      path: '/docs/assets/{file}',
      ...publicAccess,
      tags,
      summary: 'The documentation pages’ scripts and styles',
      request: {
        params: z.object({
          file: z
            .enum([...DOCS_FILES, 'swagger-init.js'])
            .openapi({ param: { name: 'file', in: 'path' }, example: 'swagger-ui.css' }),
        }),
      },
      responses: {
        200: {
          description: 'The file',
          content: {
            'text/javascript': { schema: z.string() },
            'text/css': { schema: z.string() },
            'image/png': { schema: z.string().openapi({ format: 'binary' }) },
          },
        },
        ...errorResponse(404, 'No such file, or not served by this runtime'),
      },
    }),
    async (c) => {
      const file = c.req.param('file')!;
      if (file === 'swagger-init.js') return c.body(SWAGGER_INIT, 200, { 'Content-Type': 'text/javascript' });
      const asset = (DOCS_FILES as readonly string[]).includes(file)
        ? await deps.docsAsset?.(file)
        : undefined;
      if (!asset) throw new ServeError('ERR_NOT_FOUND', `no documentation file '${file}'`, { field: 'file' });
      return c.body(asset.body as Uint8Array<ArrayBuffer>, 200, {
        'Content-Type': asset.type,
        'Cache-Control': 'public, max-age=86400',
      });
    },
  );

  return app;
}

const noDocs = (): never => {
  throw new ServeError(
    'ERR_NOT_FOUND',
    'documentation pages are not served by this runtime; see /openapi.json',
  );
};
