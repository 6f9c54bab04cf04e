/**
 * Watches MODELS_DIR and hands each model whose files changed to `onChange` (which reloads it), once its
 * tree has been quiet a while: a version directory is copied in file by file and a large model.onnx in many
 * writes, and loading one half-way would fail (or, worse, not).
 *
 * Node's own fs.watch with `recursive: true`, not chokidar: on Linux it is supported from Node 20 (this
 * project's floor), and tried here it reports a version directory copied or moved in, files written in it,
 * and directories removed, new model directories included. All the watcher needs is which model's tree
 * changed (the first path segment), not which file, so events it merges or misses within one copy do not
 * matter: the quiet period and the size check below decide when to read. On Linux the recursive watcher
 * keeps the process alive whatever unref() says, so `close()` must be called on shutdown (startServer does).
 */
import { type FSWatcher, watch } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

export interface ModelWatcherOptions {
  dir: string;
  /** The tree under one model must be this quiet (no event) before it is read. */
  quietMs?: number;
  /** Every model.onnx under a model must keep its size this long after the quiet period. */
  settleMs?: number;
  /** Reload the model `name` (its directory changed, appeared or disappeared). Calls never overlap. */
  onChange(name: string): Promise<void>;
  /** The watcher itself failed (the directory was removed, say). */
  onError?(err: unknown): void;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Size and mtime of every <name>/<version>/model.onnx, as one string to compare. */
async function snapshot(dir: string): Promise<string> {
  let versions: string[];
  try {
    versions = (await readdir(dir, { withFileTypes: true }))
      .filter((e) => e.isDirectory())
      .map((e) => e.name)
      .sort();
  } catch {
    return '';
  }
  const parts: string[] = [];
  for (const v of versions) {
    try {
      const s = await stat(join(dir, v, 'model.onnx'));
      parts.push(`${v}:${s.size}:${s.mtimeMs}`);
    } catch {
      parts.push(`${v}:-`);
    }
  }
  return parts.join(',');
}

export function createModelWatcher(options: ModelWatcherOptions) {
  const { dir, onChange } = options;
  const quietMs = options.quietMs ?? 500;
  const settleMs = options.settleMs ?? 100;
  /** A pending reload per model: its quiet-period timer. */
  const timers = new Map<string, NodeJS.Timeout>();
  /** Models waiting for their turn (reloads run one at a time, in order). */
  const due = new Set<string>();
  let running = false;
  let closed = false;

  const drain = async () => {
    if (running) return;
    running = true;
    try {
      while (!closed && due.size > 0) {
        const name = due.values().next().value!;
        due.delete(name);
        // A file still growing (written slower than the quiet period) waits for another quiet period.
        const first = await snapshot(join(dir, name));
        await new Promise((r) => setTimeout(r, settleMs));
        if (closed) break;
        if ((await snapshot(join(dir, name))) !== first) {
          arm(name);
          continue;
        }
        if (timers.has(name)) continue; // changed again meanwhile: its timer will bring it back
        await onChange(name).catch((err) => options.onError?.(err));
      }
    } finally {
      running = false;
    }
  };

  const arm = (name: string) => {
    clearTimeout(timers.get(name));
    const timer = setTimeout(() => {
      timers.delete(name);
      due.add(name);
      void drain();
    }, quietMs);
    timers.set(name, timer);
  };

  let watcher: FSWatcher | undefined = watch(dir, { recursive: true }, (_event, filename) => {
    if (closed || !filename) return;
    const name = String(filename).split(/[\\/]/)[0]!;
    if (NAME.test(name)) arm(name);
  });
  watcher.on('error', (err) => options.onError?.(err));

  return {
    /** Stop watching; a reload already running finishes, pending ones are dropped. */
    close() {
      closed = true;
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
      due.clear();
      watcher?.close();
      watcher = undefined;
    },
  };
}

export type ModelWatcher = ReturnType<typeof createModelWatcher>;
