/** A two-panel SVG bar chart: requests/s and p99 latency per scenario. No dependencies, opens anywhere. */
export function renderChart(rows: { label: string; rps: number; p99: number }[], subtitle: string): string {
  const barH = 22;
  const gap = 8;
  const labelW = 130;
  const panelW = 360;
  const top = 56;
  const height = top + rows.length * (barH + gap) + 20;
  const width = labelW + 2 * panelW + 60;
  const maxRps = Math.max(...rows.map((r) => r.rps));
  const maxP99 = Math.max(...rows.map((r) => r.p99), 1);
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
  );
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  parts.push(`<text x="10" y="20" font-size="15" font-weight="bold">onnx-serve benchmark</text>`);
  parts.push(`<text x="10" y="38" fill="#555">${esc(subtitle)}</text>`);
  parts.push(`<text x="${labelW}" y="${top - 6}" font-weight="bold">requests/s</text>`);
  parts.push(`<text x="${labelW + panelW + 30}" y="${top - 6}" font-weight="bold">p99 latency (ms)</text>`);
  rows.forEach((r, i) => {
    const y = top + i * (barH + gap);
    const w1 = Math.max(1, (r.rps / maxRps) * (panelW - 70));
    const w2 = Math.max(1, (r.p99 / maxP99) * (panelW - 50));
    const color = r.label === 'ceiling' ? '#888' : r.label.startsWith('peer') ? '#d62728' : '#1f77b4';
    parts.push(`<text x="${labelW - 6}" y="${y + 15}" text-anchor="end">${esc(r.label)}</text>`);
    parts.push(`<rect x="${labelW}" y="${y}" width="${w1.toFixed(1)}" height="${barH}" fill="${color}"/>`);
    parts.push(
      `<text x="${(labelW + w1 + 4).toFixed(1)}" y="${y + 15}">${Math.round(r.rps).toLocaleString('en-US')}</text>`,
    );
    const x2 = labelW + panelW + 30;
    parts.push(
      `<rect x="${x2}" y="${y}" width="${w2.toFixed(1)}" height="${barH}" fill="${color}" opacity="0.6"/>`,
    );
    parts.push(`<text x="${(x2 + w2 + 4).toFixed(1)}" y="${y + 15}">${r.p99}</text>`);
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
