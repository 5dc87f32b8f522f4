/**
 * The benchmark (`npm run bench`; not part of `npm test`). Prints one table and writes bench-results.json.
 * Every speed figure comes with its baseline measured in the same run, as a ratio.
 *
 *   --events N         store size for the scan/replay figures (default 500,000)
 *   --memory-from N    the smaller store size of the memory figure (7) (default 1,000,000)
 *   --memory-events N  its larger store size (default 5,000,000; building it takes minutes; 0 skips that size)
 *   --live-seconds S   duration of the live-latency run (default 30)
 *   --live-rate R      appends per second in the live-latency run (default 500)
 *   --append-seconds S duration of each append-throughput run (default 10)
 *   --scaling-events N store size for the P-scaling figures (default 200,000)
 *   --noop-types LIST  event types the no-op projections of (10) and (11) take (comma-separated; default: every type).
 *                      A type nobody writes (`--noop-types Unused`) shows what projections woken by events none of
 *                      which are theirs cost live
 *   --year-events N    events of the year-old store of (13) and (14) (default 5,000,000)
 *   --year-gaps N      its settled gaps in the history window, and as many past it (default 100,000)
 *   --writer-seconds S duration of each writer-throughput figure of (15) (default 8)
 *   --idle-seconds S   the idle span of (17) (default 60); --idle-tries N its first-event tries (default 50)
 *   --only LIST        only these figures (numbers, comma-separated; `live`: 5, 9, 11, 12; read your own writes: 19, 20, 23), written to
 *                      bench-results-partial.json (for example `--only live --events 100000 --live-seconds 10`)
 *
 * BENCH_NODE_FLAGS adds Node flags to the daemons and CLI runs it starts (a profile: `--cpu-prof --cpu-prof-dir=DIR`).
 * The daemon's settings come from the environment too (PROJECTION_RUNNER_MAX_CONCURRENT_BATCHES=16, say).
 */

import { randomUUID } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { storeNames } from '../../src/db/identifiers.js';
import { migrate } from '../../src/db/migrate.js';
import { installMessageDb, writeMessage } from '../support/foreign/message-db.js';
import { idleCost, liveLatencyAcrossRates, writerThroughput } from './wakeup.js';
import {
  REPO,
  EVENTS,
  MEMORY_EVENTS,
  LIVE_RATE,
  SCALING_EVENTS,
  ONLY,
  runs,
  log,
  startDatabase,
  generate,
  rebuild,
  appendThroughput,
  NATIVE_HEAD,
  measureLatency,
  bareTransactionsLatency,
  appendPings,
  insertPings,
  projectionCopies,
  type CatchUp,
  catchUp,
  handlersAlone,
  secondDatabase,
  gapResolution,
} from './support.js';
import { MEMORY_FROM, replayMemory } from './memory.js';
import { scanAndReplays, type ReplayRun } from './replay-speed.js';
import { yearStore } from './year-store.js';
import { manyWaitsCpu, waitLatency, waitRows } from './wait.js';

/** A figure's table row: label, value, baseline or target. */
type Row = [string, string, string];

async function main() {
  const db = await startDatabase();
  const pool = new pg.Pool({ connectionString: db.url, max: 10 });
  pool.on('error', () => {});
  const results: Record<string, unknown> = {
    events: EVENTS,
    node: process.version,
    cpus: os.cpus().length,
    date: new Date().toISOString(),
    only: ONLY ? [...ONLY] : undefined,
  };
  const table: Row[] = [['figure', 'value', 'baseline / target']];
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
  const latencyRow = (label: string, l: { p50: number; p99: number; max: number }, note: string): Row => [
    label,
    `p50 ${l.p50.toFixed(1)} ms, p99 ${l.p99.toFixed(1)} ms, max ${l.max.toFixed(1)} ms`,
    note,
  ];
  try {
    await migrate(pool, storeNames());
    log(`generating ${EVENTS} events`);
    await generate(pool, 0, EVENTS - 1);
    const { rows: size } = await pool.query('SELECT avg(pg_column_size(data))::int AS bytes FROM (SELECT data FROM events LIMIT 10000) s');
    results.eventJsonBytes = size[0].bytes;

    let scanRate: number | undefined;
    let noop: ReplayRun | undefined;
    let balancesSlot = 'account_balances';
    if (runs(1) || runs(2) || runs(3)) {
      const replayed = [...(runs(2) ? ['noop'] : []), ...(runs(3) ? ['account_balances'] : [])];
      const figures = await scanAndReplays(pool, db.url, replayed);
      scanRate = figures.scan.rate;
      results.rawScan = figures.scan;
      table.push(['(1) raw scan', `${fmt(scanRate)} events/s`, `baseline (best of ${figures.rounds}, alternated with (2) and (3))`]);
      const replayRow = (label: string, run: ReplayRun, target: string): Row => [
        label,
        `${fmt(run.rate)} events/s`,
        `${((run.rate / scanRate!) * 100).toFixed(0)} % of (1) (target ${target}); the rebuild alone (the CLI's summary) ` +
          `${fmt(run.events / run.reportedSeconds)} events/s`,
      ];
      noop = figures.replays.get('noop');
      if (noop) {
        results.replayNoop = { ...noop, ratioToRawScan: noop.rate / scanRate };
        table.push(replayRow('(2) replay, no-op, the whole command', noop, '>= 80 %'));
      }
      const balances = figures.replays.get('account_balances');
      if (balances) {
        results.replayBalances = { ...balances, ratioToRawScan: balances.rate / scanRate };
        table.push(replayRow('(3) replay, account balances, the whole command', balances, '>= 50 %'));
        log('(3) rebuild of the same projection beside its live version (blue/green), then the switch');
        const rebuilt = await rebuild('account_balances', db.url);
        // Its checkpoint (what the later figures wait on) is the new version's now.
        balancesSlot = `account_balances@v${rebuilt.version}`;
        const rebuildRate = rebuilt.events / rebuilt.seconds;
        results.rebuildBalances = { ...rebuilt, rate: rebuildRate, ratioToReplay: rebuildRate / balances.rate };
        table.push([
          '(3) rebuild beside the live version, account balances, the whole command',
          `${fmt(rebuildRate)} events/s`,
          `${((rebuildRate / balances.rate) * 100).toFixed(0)} % of the replay rate above (same run)`,
        ]);
      }
    }
    const append: Record<string, unknown> = {};
    if (runs(4)) {
      log('(4) append throughput');
      const append1 = await appendThroughput(db.url, 1);
      const append10 = await appendThroughput(db.url, 10);
      Object.assign(append, { perAppend1: append1, perAppend10: append10 });
      table.push(['(4) append, 8 writers x 1 event', `${fmt(append1.rate)} events/s`, '']);
      table.push(['(4) append, 8 writers x 10 events', `${fmt(append10.rate)} events/s`, '']);
    }
    if (runs(5)) {
      log('(5) live latency');
      const live = await measureLatency(pool, db.url, {
        caughtUp: ['latency', balancesSlot],
        headSql: NATIVE_HEAD,
        rate: LIVE_RATE,
        write: appendPings(pool),
      });
      results.liveLatencyMs = live;
      table.push(
        latencyRow('(5) live latency commit -> read model', live, `${live.samples} events at ${LIVE_RATE}/s (target p99 <= 20 ms)`),
      );
    }
    if (runs(6)) {
      log('(6) gap resolution: evidence (10 s gap timeout), then timeout path (2 s)');
      const gapDead = await gapResolution(pool, db.url, [], 10);
      const gapTimeout = await gapResolution(pool, db.url, ['--gap-evidence', 'off', '--gap-timeout', '2s'], 3);
      results.gapResolutionMs = { dead: gapDead, timedOut: gapTimeout };
      table.push([
        '(6) rollback -> gap dead (evidence)',
        `p50 ${fmt(gapDead.p50)} ms, max ${fmt(gapDead.max)} ms`,
        'gap timeout 10 s (target <= 100 ms)',
      ]);
      table.push([
        '(6) rollback -> gap timed out',
        `p50 ${fmt(gapTimeout.p50)} ms, max ${fmt(gapTimeout.max)} ms`,
        'gap timeout 2 s, evidence off',
      ]);
    }
    if (runs(8)) {
      log('(8) trigger cost: appends with the NOTIFY trigger disabled');
      await pool.query('ALTER TABLE events DISABLE TRIGGER events_notify');
      const append1NoTrigger = await appendThroughput(db.url, 1);
      await pool.query('ALTER TABLE events ENABLE TRIGGER events_notify');
      append.perAppend1WithoutTrigger = append1NoTrigger;
      const withTrigger = (append.perAppend1 as { rate: number } | undefined)?.rate;
      table.push([
        '(8) append, 8 x 1, trigger disabled',
        `${fmt(append1NoTrigger.rate)} events/s`,
        withTrigger === undefined
          ? '(4) not run'
          : `the NOTIFY trigger costs ${(((append1NoTrigger.rate - withTrigger) / append1NoTrigger.rate) * 100).toFixed(1)} % of (4) 8 x 1`,
      ]);
    }
    if (Object.keys(append).length > 0) results.append = append;
    if (runs(9)) {
      log('(9) live latency of plain INSERTs (woken by the trigger) at 200/s');
      const liveInsert = await measureLatency(pool, db.url, {
        caughtUp: ['latency', balancesSlot],
        headSql: NATIVE_HEAD,
        rate: 200,
        write: insertPings(pool),
      });
      results.liveLatencyPlainInsertMs = liveInsert;
      table.push(latencyRow('(9) live latency, plain INSERTs', liveInsert, `${liveInsert.samples} INSERTs at 200/s (target p99 <= 20 ms)`));
    }

    if (runs(10) || runs(11)) {
      const scalingDb = await secondDatabase(pool, db.url, 'bench_scaling', SCALING_EVENTS);
      if (runs(10)) {
        log(`(10) P-scaling: catch-up of ${SCALING_EVENTS} events by P = 1, 4, 16 projections`);
        const scalingRows: Array<{ kind: 'noop' | 'balances'; p: number } & CatchUp> = [];
        for (const kind of ['noop', 'balances'] as const) {
          for (const p of [1, 4, 16]) scalingRows.push({ kind, p, ...(await catchUp(scalingDb.pool, scalingDb.url, kind, p)) });
        }
        // The floor: the balances handlers alone, at the runner's catch-up batch size (10 x --batch-size's default).
        const floor = {
          one: await handlersAlone(scalingDb.pool, scalingDb.url, 1, 5_000),
          sixteen: await handlersAlone(scalingDb.pool, scalingDb.url, 16, 5_000),
        };
        results.scaling = { events: SCALING_EVENTS, rows: scalingRows, handlersAlone: floor };
        for (const kind of ['noop', 'balances'] as const) {
          const one = scalingRows.find((r) => r.kind === kind && r.p === 1)!.seconds;
          for (const r of scalingRows.filter((r) => r.kind === kind)) {
            table.push([
              `(10) catch-up, ${r.p} x ${kind}`,
              `${r.seconds.toFixed(2)} s`,
              (r.p === 1
                ? `baseline (${fmt(SCALING_EVENTS)} events)`
                : `${(r.seconds / one).toFixed(2)} x of 1 (target <= ${kind === 'noop' ? 2 : 3} x at 16)`) +
                `; CPU s: daemon ${r.daemonCpu.toFixed(1)}, PostgreSQL ${r.postgresCpu.toFixed(1)}`,
            ]);
          }
        }
        const oneBalances = scalingRows.find((r) => r.kind === 'balances' && r.p === 1)!.seconds;
        for (const [p, f] of [
          [1, floor.one],
          [16, floor.sixteen],
        ] as const) {
          table.push([
            `(10) the handlers alone, ${p} x balances`,
            `${f.seconds.toFixed(2)} s`,
            `${(f.seconds / oneBalances).toFixed(2)} x of 1 x balances run by the runner (no runner: the floor); CPU s: handlers ${f.daemonCpu.toFixed(1)}, PostgreSQL ${f.postgresCpu.toFixed(1)}`,
          ]);
        }
      }
      if (runs(11)) {
        log('(11) live latency with 16 projections at 500/s, reads per wake-up');
        const live16Dir = projectionCopies('noop', 16, true);
        const live16 = await measureLatency(scalingDb.pool, scalingDb.url, {
          projections: live16Dir,
          caughtUp: ['latency', ...Array.from({ length: 16 }, (_, i) => `noop_${i + 1}`)],
          headSql: NATIVE_HEAD,
          rate: LIVE_RATE,
          write: appendPings(scalingDb.pool),
          countReads: true,
        });
        rmSync(live16Dir, { recursive: true, force: true });
        results.liveLatency16Ms = live16;
        table.push(
          latencyRow('(11) live latency, 16 projections', live16, `${live16.samples} events at ${LIVE_RATE}/s (target p99 <= 20 ms)`),
        );
        table.push([
          '(11) reads per live wake-up, 16 projections',
          `${live16.readsPerWakeUp?.toFixed(2)} (per batch of one projection: ${live16.readsPerLatencyBatch?.toFixed(2)})`,
          'target 1 (wake-ups: projection_runner_wakeups_total)',
        ]);
        const floors = [];
        for (const roundTrips of [1, 2] as const) {
          const floor = await bareTransactionsLatency(scalingDb.pool, scalingDb.url, 17, roundTrips);
          floors.push({ roundTrips, ...floor });
          table.push(
            latencyRow(
              `(11) floor: 17 bare transactions per wake-up, ${roundTrips} round trip${roundTrips === 1 ? '' : 's'} each`,
              floor,
              `no runner: one read, then 17 sessions each BEGIN/UPDATE/COMMIT; PostgreSQL ${floor.cpu.postgres.toFixed(2)}, writer + this floor ${floor.cpu.writer.toFixed(2)} cores`,
            ),
          );
        }
        results.liveLatencyBareTransactionsMs = floors;
        table.push([
          '(11) CPU while live, 16 projections',
          `daemon ${live16.cpu.daemon.toFixed(2)}, PostgreSQL ${live16.cpu.postgres.toFixed(2)}, writer ${live16.cpu.writer.toFixed(2)} cores`,
          `${fmt(live16.batchesPerSecond ?? 0)} batches/s (2 cores in all)`,
        ]);
      }
      await scalingDb.pool.end();
    }

    if (runs(12)) {
      log('(12) message-db: live latency of write_message at 200/s (the runner on --source message-db)');
      const mdb = await secondDatabase(pool, db.url, 'bench_message_db', 0, { native: false });
      await installMessageDb(mdb.url);
      const writers = new pg.Pool({ connectionString: mdb.url, max: 8, options: '-c search_path=message_store,public' });
      writers.on('error', () => {});
      const mdbDir = projectionCopies('noop', 0, true);
      const liveMessageDb = await measureLatency(mdb.pool, mdb.url, {
        projections: mdbDir,
        args: ['--source', 'message-db'],
        caughtUp: ['latency'],
        headSql: 'SELECT coalesce(max(global_position), 0) AS m FROM message_store.messages',
        rate: 200,
        write: async (i) => {
          const client = await writers.connect();
          try {
            const id = randomUUID();
            await writeMessage(client, { id, streamName: `ping-${i % 100}`, type: 'Ping', data: { i } });
            const committedAt = Date.now();
            const { rows } = await client.query('SELECT global_position::text AS p FROM message_store.messages WHERE id = $1', [id]);
            return { position: rows[0].p as string, committedAt };
          } finally {
            client.release();
          }
        },
      });
      rmSync(mdbDir, { recursive: true, force: true });
      await writers.end();
      await mdb.pool.end();
      results.liveLatencyMessageDbMs = liveMessageDb;
      table.push(
        latencyRow(
          '(12) live latency, message-db write_message',
          liveMessageDb,
          `${liveMessageDb.samples} messages at 200/s (target p99 <= 20 ms)`,
        ),
      );
    }

    if (runs(13) || runs(14)) {
      const year = await yearStore(pool, db.url, { measure: runs(13), step: runs(14) });
      results.yearStore = year.results;
      table.push(...year.rows);
    }

    if (runs(19) || runs(20) || runs(23)) {
      const waitDb = await secondDatabase(pool, db.url, 'bench_wait', 0);
      const latency = [];
      if (runs(19)) {
        for (const count of [1, 16]) {
          log(`(19) commit -> waitFor resolved at 200/s, ${count} projection(s), half filtering the type out`);
          latency.push(await waitLatency(waitDb.pool, waitDb.url, count));
        }
      }
      if (runs(23)) {
        log('(23) commit -> waitFor resolved at 200/s, 16 projections, 7 taking the type and writing nothing for it');
        latency.push(await waitLatency(waitDb.pool, waitDb.url, 16, { quiet: true }));
      }
      let cpu;
      if (runs(20)) {
        log('(20) CPU of 1,000 concurrent waits over one waiter, beside the same run without waits');
        cpu = await manyWaitsCpu(waitDb.pool, waitDb.url);
      }
      results.readYourWrites = { latency, cpu };
      table.push(...waitRows(latency, cpu));
      await waitDb.pool.end();
    }

    if (runs(7)) {
      // After every figure that reads the main store: it grows the store (memory.ts).
      const memory = await replayMemory(pool, db.url, [MEMORY_FROM, MEMORY_EVENTS]);
      results.memory = { replays: memory.results, peakRssMbDuring2: noop?.peakRssMb };
      table.push(...memory.rows);
    }

    // The wake-up path (wakeup.ts): each in databases of its own, beside the big store.
    for (const [figure, key, measure] of [
      [15, 'writerThroughput', writerThroughput],
      [16, 'liveLatencyAcrossRates', liveLatencyAcrossRates],
      [17, 'idleCost', idleCost],
    ] as const) {
      if (!runs(figure)) continue;
      const { rows, results: figures } = await measure(pool, db.url);
      results[key] = figures;
      table.push(...rows);
    }

    const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
    process.stdout.write(`\n${table.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ')).join('\n')}\n\n`);
    // A partial run (--only) keeps the full run's figures: it writes its own file.
    const file = ONLY ? 'bench-results-partial.json' : 'bench-results.json';
    writeFileSync(path.join(REPO, file), `${JSON.stringify(results, null, 2)}\n`);
    log(`figures written to ${file}`);
  } finally {
    await pool.end();
    await db.stop();
  }
}

await main();
