// Preloaded into a CLI child (NODE_OPTIONS=--import): at exit, writes to $LOADED_MODULES_FILE the packages the
// process loaded (from the CommonJS cache: every dependency that matters here is CommonJS) and whether Node's fetch
// implementation (undici, built in) was started. test/integration/cli/start-cost.test.ts reads it.
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
process.on('exit', () => {
  const packages = new Set();
  for (const file of Object.keys(require.cache)) {
    const match = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file);
    if (match) packages.add(match[1]);
  }
  const undici = process.moduleLoadList.some((name) => name.includes('undici'));
  writeFileSync(process.env.LOADED_MODULES_FILE, JSON.stringify({ packages: [...packages].sort(), undici }));
});
