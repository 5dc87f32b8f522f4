import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO } from '../../support/child-runner.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';
import { markedBlock } from '../../support/docs.js';

/**
 * The README's example, run as written against a fresh, empty database: the only change is the package name, which
 * points at the sources (the package is not built in a test run). A README example that no longer compiles or runs
 * against the real API fails here.
 */
const TSX_LOADER = pathToFileURL(path.join(REPO, 'node_modules/tsx/dist/loader.mjs')).href;

let db: TestDatabase;
let dir: string;
beforeAll(async () => {
  db = await createTestDatabase({ migrated: false });
  // Inside the repository, so that the example's own imports (pg, pino) resolve as they would in an application.
  dir = mkdtempSync(path.join(REPO, 'test', '.readme-example-'));
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await db.drop();
});

describe("the README's example", () => {
  it('appends, runs the projection and reads the model it built: account-42 at 70', async () => {
    const source = markedBlock('README.md', 'example');
    expect(source).toContain("from 'projection-runner'");
    const file = path.join(dir, 'example.ts');
    writeFileSync(file, source.replace("from 'projection-runner'", `from '${pathToFileURL(path.join(REPO, 'src/index.ts')).href}'`));

    const child = spawn(process.execPath, ['--import', TSX_LOADER, file], {
      cwd: REPO,
      env: { ...process.env, DATABASE_URL: db.url },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));

    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    expect(stdout.trim().split('\n').at(-1)).toBe('account-42: 70');
    const { rows } = await db.pool.query('SELECT account, amount::text FROM balances');
    expect(rows).toEqual([{ account: 'account-42', amount: '70' }]);
  }, 120_000);
});
