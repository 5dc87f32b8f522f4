import { appendEmmett, openEmmettStore } from './emmett.js';

/**
 * One Emmett appender in a process of its own (Emmett's client changes pg's type parsers process-wide): appends
 * `count` events to streams `<prefix>-<n>` with the real `appendToStream`, in appends of 1 to 10 events, then
 * prints `done <count>`. Usage: node --import tsx emmett-appender.ts URL PREFIX COUNT
 */
const [url, prefix, countText] = process.argv.slice(2);
const count = Number(countText);
const store = openEmmettStore(url!);
let sent = 0;
for (let size = 1, n = 0; sent < count; size = (size % 10) + 1, n++) {
  const events = Array.from({ length: Math.min(size, count - sent) }, () => ({ type: 'Ticked', data: { prefix, n: sent++ } }));
  // 50 streams per appender: appends of one appender never conflict with each other.
  await appendEmmett(store, `${prefix}-${n % 50}`, events);
}
await store.close();
process.stdout.write(`done ${sent}\n`);
