import { execFile } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO } from '../child-runner.js';

/**
 * Runs emmett-appender.ts in a process of its own (Emmett's client changes pg's type parsers process-wide: a test
 * that loads it runs its runner under them, one that uses this does not): `count` events with the real
 * appendToStream to streams `<prefix>-<n>`. Resolves with the appender's last line, `done <count>`.
 */
export function appendInChildProcess(databaseUrl: string, prefix: string, count: number): Promise<string> {
  const loader = pathToFileURL(path.join(REPO, 'node_modules/tsx/dist/loader.mjs')).href;
  const script = path.join(REPO, 'test/support/foreign/emmett-appender.ts');
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ['--import', loader, script, databaseUrl, prefix, String(count)], { cwd: REPO }, (error, stdout, stderr) =>
      error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout.trim()),
    ),
  );
}
