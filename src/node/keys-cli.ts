/**
 * Make and hash API keys: `npm run keys -- new NAME SCOPES [RATE]` prints a new key (shown once: give it to
 * its owner) and the line to add to API_KEYS or API_KEYS_FILE, which holds only the key's SHA-256;
 * `npm run keys -- hash NAME SCOPES [RATE]` reads an existing key from stdin and prints its line.
 */
import { generateKey, keyDigestHex, keyLine, parseKeys, SCOPES, type Scope } from '../core/access.js';

const usage = `usage:
  npm run keys -- new NAME SCOPES [RATE]    a new key and its configuration line
  npm run keys -- hash NAME SCOPES [RATE]   the configuration line of a key read from stdin
SCOPES: ${SCOPES.join(', ')}, joined by + (predict+admin). RATE: this key's requests per window.`;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').trim();
}

async function main(argv: string[]) {
  const [command, name, scopeList, rate] = argv;
  if ((command !== 'new' && command !== 'hash') || !name || !scopeList) {
    console.error(usage);
    return 2;
  }
  const scopes = scopeList.split('+') as Scope[];
  const key = command === 'new' ? generateKey() : await readStdin();
  if (key === '') {
    console.error('no key on stdin');
    return 2;
  }
  const line = keyLine(name, scopes, keyDigestHex(key), rate === undefined ? undefined : Number(rate));
  try {
    parseKeys(line); // the same check the server makes at start
  } catch (err) {
    console.error((err as Error).message);
    return 2;
  }
  if (command === 'new') {
    console.log(`key (shown once; the server keeps only its hash): ${key}`);
    console.log(`line for API_KEYS or API_KEYS_FILE:               ${line}`);
  } else {
    console.log(line);
  }
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
