/**
 * Loads the PostgreSQL client (`pg`) without the fetch implementation of Node 20. When `pg` loads, it asks whether it
 * runs in a Cloudflare Worker: with no global `navigator` (Node 20 has none, Node 21 and later do) it builds a fetch
 * `Response` to find out, and that loads and starts undici, about 50 ms of CPU at every start of a command: a fifth of
 * the whole `status` command. A `navigator` as Node 21 defines it, there only while `pg` loads, makes it answer from
 * the user agent instead. Call it before anything that imports `pg` is loaded (the CLI does, before its commands).
 */
export async function loadPg(): Promise<void> {
  if ('navigator' in globalThis) {
    await import('pg');
    return;
  }
  const userAgent = `Node.js/${process.versions.node.split('.')[0]}`;
  Object.defineProperty(globalThis, 'navigator', { value: { userAgent }, configurable: true, writable: true });
  try {
    await import('pg');
  } finally {
    delete (globalThis as { navigator?: unknown }).navigator;
  }
}
