/** What the HTTP layer reports. Node implements it with prom-client; elsewhere it may be a no-op. */
export interface AppMetrics {
  request(route: string, method: string, status: number, seconds: number): void;
  rows(model: string, version: string, rows: number): void;
  error(code: string): void;
  /** A request refused by access control: why, and whose (a key's name, `anonymous` or `unknown`). */
  refused?(reason: string, key: string): void;
  render(): Promise<{ contentType: string; body: string }>;
}

export const noopMetrics: AppMetrics = {
  request() {},
  rows() {},
  error() {},
  render: async () => ({ contentType: 'text/plain; version=0.0.4', body: '' }),
};
