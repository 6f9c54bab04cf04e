/**
 * The ceiling: a bare Hono app on @hono/node-server that parses the same JSON body a /predict request sends
 * and answers a constant JSON. Nothing can serve a request faster on this stack.
 */
import { serve } from '@hono/node-server';
import { Hono } from 'hono';

const app = new Hono();
const answer = { prediction: 0, probability: 0.5, model_version: 'constant', cached: false };
app.post('/predict', async (c) => {
  await c.req.json();
  return c.json(answer);
});
app.get('/health', (c) => c.json({ status: 'healthy' }));

const port = Number(process.env.PORT ?? 8100);
serve({ fetch: app.fetch, port, hostname: '127.0.0.1' }, () => console.log(`ceiling listening on ${port}`));
