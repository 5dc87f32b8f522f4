import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventStore } from '../../../src/index.js';
import { REPO, startDaemon } from '../../support/child-runner.js';
import { waitFor } from '../../support/database.js';
import { expectExactlyOnceInOrder, readLog, waitUntilAllApplied } from '../../support/position-log.js';
import { startPrivateServer } from '../../support/private-server.js';
import { REACTION_STREAM, REACTION_TYPE, reactsTo } from '../../fixtures/chaos-projections/reactor.js';
import { sleep } from '../../../src/shared/time.js';

/**
 * The chaos suite: everything at once, one invariant. Writers of every kind at the same time:
 *   - 8 plain writers (library appends and plain INSERTs, ~10 % rollbacks, transactions held open for random times, a
 *     few longer than the gap timeout);
 *   - 3 "ORM" writers with nested transactions: append, SAVEPOINT, a failing statement (the transaction is aborted,
 *     and sometimes stays so for a while), ROLLBACK TO SAVEPOINT, maybe another append, then COMMIT (mostly) or
 *     ROLLBACK;
 *   - a few transactions that take a position and stay open for longer than 10 × the gap timeout (the old late-watch
 *     window) before committing: delivered late, exactly once;
 *   - a reactor projection whose handler appends a `Reaction` event in its own transaction for some events.
 * Two runner instances are SIGKILLed at random and restarted; once the first wave of long transactions has committed
 * (late events exist, at the lowest positions) both daemons are restarted with one more log projection; then
 * PostgreSQL is restarted once and a second wave of long transactions runs.
 * At the end every committed event (reactions included) is applied exactly once by every log projection, in global
 * order except for the events flagged late, and the reactor has reacted to each of its source events exactly once.
 */

const GAP_TIMEOUT_MS = 1_000;
/** Chaos lasts at least this long (and until the mid-run projection has run through some of it). */
const CHAOS_MS = 28_000;
/** A transaction open for less than this cannot have timed out (diagnostics only). */
const SHORT_MS = GAP_TIMEOUT_MS * 0.7;
/** Long transactions: a first wave before anything else (the lowest positions), a second after the database restart. */
const LONG_HOLDS_FIRST = 4;
const LONG_HOLDS_SECOND = 2;
/** Well past 10 × the gap timeout after the gap was given up: the old late-watch window had forgotten these gaps. */
const LONG_HOLD_MS = 12 * GAP_TIMEOUT_MS;

const PROJECTIONS = path.join(REPO, 'test/fixtures/chaos-projections');
const PROJECTIONS_ADDED = path.join(REPO, 'test/fixtures/chaos-projections-added');
const LOGS_FROM_START = ['chaos_a', 'chaos_b', 'chaos_reactor'];
const LOGS_ALL = [...LOGS_FROM_START, 'chaos_c'];

let server: Awaited<ReturnType<typeof startPrivateServer>>;
beforeAll(async () => {
  server = await startPrivateServer();
});
afterAll(() => server.stop());

const range = (first: bigint | number, last: bigint | number) =>
  Array.from({ length: Number(last) - Number(first) + 1 }, (_, k) => Number(first) + k);

interface Stats {
  commits: number;
  rollbacks: number;
  longHolds: number;
  errors: number;
  savepointCommits: number;
  savepointRollbacks: number;
  abortedHolds: number;
  /** Positions of every committed transaction and how long it stayed open after taking its first position. */
  committedTxs: Array<{ kind: string; positions: number[]; openMs: number }>;
}

function newClient(name: string) {
  const client = new pg.Client({ connectionString: server.url, application_name: name });
  client.on('error', () => {});
  return client;
}

async function insertPlain(client: pg.Client, stream: string, type: string): Promise<number[]> {
  const { rows } = await client.query(
    `INSERT INTO events (stream_name, stream_position, type, data) VALUES ($1, 1, $2, '{}') RETURNING global_position::int AS p`,
    [stream, type],
  );
  return rows.map((r) => r.p);
}

async function writer(id: number, signal: AbortSignal, stats: Stats) {
  let client: pg.Client | undefined;
  const store = new EventStore(server.pool);
  for (let i = 0; !signal.aborted; i++) {
    try {
      if (!client) {
        client = newClient(`chaos-writer-${id}`);
        await client.connect();
      }
      await client.query('BEGIN');
      let positions: number[];
      if (id % 2 === 0) {
        positions = await insertPlain(client, `plain-${id}-${i}`, 'Plain');
      } else {
        const r = await store.append(
          `w${id}-${i % 10}`,
          [
            { type: 'E', data: { i } },
            { type: 'E', data: { i } },
          ],
          { client },
        );
        positions = range(r.firstPosition, r.lastPosition);
      }
      const taken = Date.now();
      const roll = Math.random();
      if (roll < 0.01) {
        stats.longHolds++;
        await sleep(GAP_TIMEOUT_MS * 1.5); // outlives the gap timeout: a late event
      } else if (roll < 0.1) {
        await sleep(Math.random() * 300);
      }
      if (Math.random() < 0.1) {
        await client.query('ROLLBACK');
        stats.rollbacks++;
      } else {
        await client.query('COMMIT');
        stats.commits++;
        stats.committedTxs.push({ kind: `writer-${id}`, positions, openMs: Date.now() - taken });
      }
    } catch {
      stats.errors++;
      await client?.end().catch(() => {});
      client = undefined;
      await sleep(200);
    }
    await sleep(Math.random() * 15);
  }
  await client?.end().catch(() => {});
}

/**
 * An ORM with nested transactions (or pgjdbc autosave, psql ON_ERROR_ROLLBACK): BEGIN; append; SAVEPOINT; a failing
 * statement aborts the transaction (a unique violation that has already taken a position, or a division by zero);
 * the session may sit "idle in transaction (aborted)" for a while; ROLLBACK TO SAVEPOINT; maybe another append;
 * COMMIT (mostly) or ROLLBACK. The rows written before the savepoint are committed: their gap must be held.
 */
async function savepointWriter(id: number, signal: AbortSignal, stats: Stats) {
  let client: pg.Client | undefined;
  const store = new EventStore(server.pool);
  for (let i = 0; !signal.aborted; i++) {
    try {
      if (!client) {
        client = newClient(`chaos-orm-${id}`);
        await client.connect();
      }
      await client.query('BEGIN');
      const stream = `orm-${id}-${i}`;
      const positions =
        i % 2 === 0
          ? await insertPlain(client, stream, 'Saved')
          : await store.append(stream, [{ type: 'Saved', data: { i } }], { client }).then((r) => range(r.firstPosition, r.lastPosition));
      const taken = Date.now();
      await client.query('SAVEPOINT nested');
      const failing =
        Math.random() < 0.5
          ? client.query(`INSERT INTO events (stream_name, stream_position, type, data) VALUES ($1, 1, 'Duplicate', '{}')`, [stream])
          : client.query('SELECT 1 / 0');
      const failed = await failing.then(
        () => false,
        () => true,
      );
      if (!failed) throw new Error('the failing statement did not fail');
      const roll = Math.random();
      if (roll < 0.02) {
        stats.abortedHolds++;
        await sleep(GAP_TIMEOUT_MS * 1.5); // aborted for longer than the gap timeout: timed out, then late
      } else if (roll < 0.12) {
        // Aborted for a good while, yet within the gap timeout: the gap must be held (not declared dead) and the
        // event applied in global order.
        await sleep(GAP_TIMEOUT_MS * (0.3 + Math.random() * 0.3));
      } else if (roll < 0.3) {
        await sleep(Math.random() * 200);
      }
      await client.query('ROLLBACK TO SAVEPOINT nested');
      if (Math.random() < 0.5) {
        const r = await store.append(stream, [{ type: 'Saved', data: { i, after: 'savepoint' } }], { client });
        positions.push(...range(r.firstPosition, r.lastPosition));
      }
      if (Math.random() < 0.15) {
        await client.query('ROLLBACK');
        stats.savepointRollbacks++;
      } else {
        await client.query('COMMIT');
        stats.savepointCommits++;
        stats.committedTxs.push({ kind: `orm-${id}`, positions, openMs: Date.now() - taken });
      }
    } catch {
      stats.errors++;
      await client?.end().catch(() => {});
      client = undefined;
      await sleep(200);
    }
    await sleep(Math.random() * 20);
  }
  await client?.end().catch(() => {});
}

/**
 * A transaction that takes a position and stays open for longer than 10 × the gap timeout, then commits. `taken`
 * settles once it holds its position, `committed` with the positions once it has committed.
 */
/** For each long-held position, the projections whose checkpoint had passed it right before it committed. */
const passedBeforeCommit = new Map<number, Set<string>>();

function longHold(n: number, stats: Stats): { taken: Promise<void>; committed: Promise<number[]> } {
  let onTaken!: () => void;
  const taken = new Promise<void>((resolve) => (onTaken = resolve));
  const committed = (async () => {
    const client = newClient(`chaos-long-${n}`);
    await client.connect();
    try {
      const store = new EventStore(server.pool);
      await client.query('BEGIN');
      let positions: number[];
      if (n % 3 === 0) {
        positions = await insertPlain(client, `long-${n}`, 'Held');
      } else {
        const r = await store.append(`long-${n}`, [{ type: 'Held', data: { n } }], { client });
        positions = range(r.firstPosition, r.lastPosition);
      }
      const takenAt = Date.now();
      onTaken();
      if (n % 3 === 2) {
        // ...and nested transactions on top: aborted, rolled back to the savepoint, then the long wait.
        await client.query('SAVEPOINT nested');
        await client.query('SELECT 1 / 0').catch(() => {});
        await client.query('ROLLBACK TO SAVEPOINT nested');
      }
      await sleep(LONG_HOLD_MS + Math.random() * 1_000);
      // Which projections had passed these positions before they committed: those must get them late. (One far
      // behind, the reactor under the load of a busy machine, reads them in order: also right.)
      const { rows } = await server.pool.query<{ name: string }>(
        'SELECT name FROM projection_checkpoints WHERE name = ANY($1) AND position >= $2',
        [LOGS_FROM_START, Math.max(...positions)],
      );
      for (const p of positions) passedBeforeCommit.set(p, new Set(rows.map((r) => r.name)));
      await client.query('COMMIT');
      stats.committedTxs.push({ kind: `long-${n}`, positions, openMs: Date.now() - takenAt });
      return positions;
    } finally {
      await client.end().catch(() => {});
    }
  })();
  return { taken: Promise.race([taken, committed.then(() => {})]), committed };
}

async function positionsOf(sql: string): Promise<number[]> {
  const { rows } = await server.pool.query(sql);
  return rows.map((r) => r.p);
}

/** What to print when an end check fails: per log, the committed positions it lacks or has twice, and the gaps. */
async function diagnose(names: string[]): Promise<string> {
  const committed = new Set(await positionsOf('SELECT global_position::int AS p FROM events'));
  const lines: string[] = [];
  for (const name of names) {
    const log = await readLog(server.pool, name).catch(() => []);
    const seen = new Set(log.map((r) => r.position));
    const missing = [...committed].filter((p) => !seen.has(p)).sort((a, b) => a - b);
    const twice = log.filter((r) => r.applied !== 1).map((r) => `${r.position}×${r.applied}`);
    lines.push(
      `${name}: ${log.length} applied; missing ${JSON.stringify(missing.slice(0, 30))}; more than once ${JSON.stringify(twice.slice(0, 30))}`,
    );
  }
  const { rows: checkpoints } = await server.pool.query(
    'SELECT name, position::int, state, late_seen_id::int FROM projection_checkpoints ORDER BY name',
  );
  const { rows: hw } = await server.pool.query('SELECT position::int, head::int FROM projection_high_water');
  const { rows: open } = await server.pool.query(
    `SELECT from_position::int AS f, to_position::int AS t, resolution FROM projection_gaps
      WHERE resolved_at IS NULL OR resolution IN ('dead', 'timed_out', 'late') ORDER BY from_position DESC LIMIT 30`,
  );
  lines.push(`checkpoints: ${JSON.stringify(checkpoints)}`, `high water: ${JSON.stringify(hw)}`, `gaps: ${JSON.stringify(open)}`);
  return lines.join('\n');
}

describe('chaos', () => {
  it('every committed event applied exactly once, in order except late ones, through savepoints, long transactions, a reactor, kills, a database restart and a projection added mid-run', async () => {
    let projections = PROJECTIONS;
    const args = () => [
      '--projections',
      projections,
      '--gap-timeout',
      `${GAP_TIMEOUT_MS}ms`,
      '--poll-interval',
      '250ms',
      '--batch-size',
      '20',
    ];
    const spawnInstance = () => startDaemon(server.url, args(), { PROJECTION_RUNNER_LOG_LEVEL: 'info' });
    const instances = [spawnInstance(), spawnInstance()];
    const allOutputs: string[] = [];
    const outputs = () => allOutputs.join('') + instances.map((i) => i.output.join('')).join('');
    const stop = async (index: number, signal: NodeJS.Signals) => {
      allOutputs.push(instances[index]!.output.join(''));
      instances[index]!.child.kill(signal);
      await instances[index]!.exited;
    };
    const stats: Stats = {
      commits: 0,
      rollbacks: 0,
      longHolds: 0,
      errors: 0,
      savepointCommits: 0,
      savepointRollbacks: 0,
      abortedHolds: 0,
      committedTxs: [],
    };
    const writing = new AbortController();
    let writers: Array<Promise<void>> = [];
    let kills = 0;
    let restarted = false;
    let added: { at: number; lateGapsBefore: number } | undefined;
    const waves: Array<Promise<number[][]>> = [];
    let firstWave: number[] | undefined;
    let secondWave: number[] | undefined;
    const started = Date.now();
    try {
      // First wave of long transactions, before any other writer: they hold the lowest positions, which the
      // projection added later reads in its very first batch (where a late notice must not apply them again).
      // (Once the daemons run, so that the gaps are seen and given up long before the long transactions commit.)
      await waitFor(
        'the projections started',
        () => (outputs().match(/"msg":"projection started"/g) ?? []).length >= LOGS_FROM_START.length,
        30_000,
      );
      const first = Array.from({ length: LONG_HOLDS_FIRST }, (_, n) => longHold(n, stats));
      await Promise.all(first.map((h) => h.taken));
      waves.push(Promise.all(first.map((h) => h.committed)));
      void waves[0]!.then(
        (p) => (firstWave = p.flat()),
        () => {},
      );
      writers = [
        ...Array.from({ length: 8 }, (_, id) => writer(id, writing.signal, stats)),
        ...Array.from({ length: 3 }, (_, id) => savepointWriter(id, writing.signal, stats)),
      ];

      while (Date.now() - started < CHAOS_MS || !added || Date.now() - added.at < 6_000 || !secondWave) {
        await sleep(2_000 + Math.random() * 2_000);
        const victim = Math.floor(Math.random() * instances.length);
        await stop(victim, 'SIGKILL');
        kills++;
        instances[victim] = spawnInstance();
        if (!added && firstWave) {
          // The first wave committed long after its gaps were given up: late events exist. Now one more projection
          // joins: both daemons restart with it in their projections folder.
          const held = firstWave;
          await waitFor(
            'the long-held events delivered (late) to chaos_a',
            async () => {
              const { rows } = await server.pool.query('SELECT count(*)::int AS n FROM log_chaos_a WHERE position = ANY($1)', [held]);
              return rows[0].n === held.length;
            },
            30_000,
          ).catch(async (error) => {
            throw new Error(`${(error as Error).message} (long-held positions ${held.join(', ')})\n${await diagnose(LOGS_FROM_START)}`);
          });
          const { rows: lateGaps } = await server.pool.query("SELECT count(*)::int AS n FROM projection_gaps WHERE resolution = 'late'");
          projections = PROJECTIONS_ADDED;
          await stop(0, 'SIGKILL');
          await stop(1, 'SIGTERM');
          instances[0] = spawnInstance();
          instances[1] = spawnInstance();
          added = { at: Date.now(), lateGapsBefore: lateGaps[0].n };
          await waitFor('chaos_c started', () => /"projection":"chaos_c"[^\n]*"msg":"projection started"/.test(outputs()), 30_000);
        }
        if (added && !restarted) {
          // Right after: the database restart, then a second wave of long transactions (which the restart would have ended).
          restarted = true;
          await server.server.stop();
          await sleep(1_000);
          await server.server.restart();
          // (Once the runner moves H again, so that the gaps are seen and given up long before they commit.)
          const head = await waitFor(
            'the database back',
            async () => {
              const { rows } = await server.pool.query('SELECT max(global_position)::int AS p FROM events');
              return { p: rows[0].p as number };
            },
            30_000,
          );
          await waitFor(
            'H moving after the database restart',
            async () => {
              // (A daemon that gave up while the database was down is started again.)
              for (const [k, i] of instances.entries()) {
                if (i.child.exitCode !== null || i.child.signalCode !== null) {
                  allOutputs.push(i.output.join(''));
                  instances[k] = spawnInstance();
                }
              }
              const { rows } = await server.pool.query('SELECT position::int AS p FROM projection_high_water');
              return rows[0].p > head.p;
            },
            30_000,
          );
          const second = Array.from({ length: LONG_HOLDS_SECOND }, (_, n) => longHold(LONG_HOLDS_FIRST + n, stats));
          waves.push(Promise.all(second.map((h) => h.committed)));
          void waves[1]!.then(
            (p) => (secondWave = p.flat()),
            () => {},
          );
        }
      }
      writing.abort();
      await Promise.all(writers);
      const longPositions = (await Promise.all(waves)).flat(2);

      // The reactor writes while it applies: wait until it has applied every event in the table (in one snapshot),
      // after which nothing writes any more; only then is the list of committed events final.
      await waitFor(
        'the reactor caught up with every event (its reactions included)',
        async () => {
          const { rows } = await server.pool.query(`SELECT
              (SELECT count(*) FROM events) = (SELECT count(*) FROM log_chaos_reactor) AS all_applied,
              (SELECT position FROM projection_checkpoints WHERE name = 'chaos_reactor') = (SELECT max(global_position) FROM events) AS at_head`);
          return rows[0].all_applied && rows[0].at_head;
        },
        60_000,
      ).catch(async (error) => {
        throw new Error(`${(error as Error).message}\n${await diagnose(LOGS_ALL)}`);
      });
      const committed = await positionsOf('SELECT global_position::int AS p FROM events ORDER BY 1');
      await waitUntilAllApplied(server.pool, committed, LOGS_ALL, 60_000).catch(async (error) => {
        throw new Error(`${(error as Error).message}\n${await diagnose(LOGS_ALL)}`);
      });

      // The invariant, for every log projection (the reactor's delivery log and the one added mid-run included).
      const report: string[] = [];
      const lateByLog = new Map<string, Set<number>>();
      for (const name of LOGS_ALL) {
        const log = await expectExactlyOnceInOrder(server.pool, name, committed);
        lateByLog.set(name, new Set(log.filter((r) => r.late).map((r) => r.position)));
        report.push(`${name}: ${log.length} applied, ${lateByLog.get(name)!.size} late`);
      }

      // The long transactions outlived 10 × the gap timeout: delivered late (once, checked above) to every projection
      // that had passed them when they committed. That is most of them (the check would be empty otherwise).
      const mustBeLate = (name: string) => longPositions.filter((p) => passedBeforeCommit.get(p)?.has(name));
      expect(LOGS_FROM_START.flatMap(mustBeLate).length, 'long-held positions passed before they committed').toBeGreaterThan(
        longPositions.length,
      );
      for (const name of LOGS_FROM_START) {
        expect(
          mustBeLate(name).filter((p) => !lateByLog.get(name)!.has(p)),
          `long-held positions passed before they committed, not flagged late in ${name}`,
        ).toEqual([]);
      }

      // The reactor reacted to each of its source events exactly once, in its read model and in the event store;
      // reactions were never reacted to.
      const { rows: typed } = await server.pool.query('SELECT global_position::int AS p, type FROM events ORDER BY 1');
      const sources = typed.filter((e) => reactsTo({ type: e.type, globalPosition: BigInt(e.p) })).map((e) => e.p);
      const { rows: reacted } = await server.pool.query('SELECT source::int AS s, reacted, late FROM chaos_reactions ORDER BY source');
      expect(reacted.filter((r) => r.reacted !== 1)).toEqual([]);
      expect(reacted.map((r) => r.s)).toEqual(sources);
      const { rows: reactions } = await server.pool.query(
        `SELECT (data->>'source')::int AS s, global_position::int AS p, stream_name FROM events WHERE type = $1 ORDER BY 1`,
        [REACTION_TYPE],
      );
      expect(reactions.map((r) => r.s)).toEqual(sources);
      expect(reactions.every((r) => r.stream_name === REACTION_STREAM)).toBe(true);
      const reactionPositions = new Set(reactions.map((r) => r.p));
      expect(sources.some((s) => reactionPositions.has(s))).toBe(false);

      // Diagnostics, not assertions (they depend on timing): a late event whose transaction was open for clearly less
      // than the gap timeout means its gap was declared dead while it was still open (a savepoint or a handler
      // session not seen by the evidence).
      const lateA = lateByLog.get('chaos_a')!;
      const shortLate = stats.committedTxs
        .filter((t) => t.openMs < SHORT_MS && t.positions.some((p) => lateA.has(p)))
        .map((t) => `${t.kind}@${t.positions.join('+')}(${t.openMs}ms)`);
      const lateReactions = reactions.filter((r) => lateA.has(r.p)).length;
      const { rows: gaps } = await server.pool.query(
        "SELECT coalesce(resolution, 'open') AS r, count(*)::int AS n FROM projection_gaps GROUP BY 1 ORDER BY 1",
      );
      const byResolution = Object.fromEntries(gaps.map((g) => [g.r, g.n]));
      const starts = (outputs().match(/"msg":"projection started"/g) ?? []).length;
      console.info(
        [
          `chaos summary: ${committed.length} committed events (${reactions.length} reactions), ${lateA.size} late in chaos_a; ` +
            `gaps dead=${byResolution.dead ?? 0} timed_out=${byResolution.timed_out ?? 0} late=${byResolution.late ?? 0} ` +
            `filled=${byResolution.filled ?? 0} open=${byResolution.open ?? 0}; ` +
            `savepoint writers: ${stats.savepointCommits} commits, ${stats.savepointRollbacks} rollbacks, ${stats.abortedHolds} aborted past the gap timeout; ` +
            `${LONG_HOLDS_FIRST + LONG_HOLDS_SECOND} transactions held ${LONG_HOLD_MS / 1000}+ s; reactor: ${sources.length} reacted once each, ${lateReactions} reactions late; ` +
            `chaos_c added after ${added!.lateGapsBefore} late gaps; kills ${kills}, database restarts 1`,
          `writers: ${stats.commits} commits, ${stats.rollbacks} rollbacks, ${stats.longHolds} holds past the gap timeout, ` +
            `${stats.errors} writer errors (database restart); projection starts: ${starts}`,
          `late though open < ${SHORT_MS} ms: ${shortLate.length}${shortLate.length ? ` ${shortLate.slice(0, 10).join(' ')}` : ''}`,
          ...report,
        ].join('\n'),
      );
      expect(kills).toBeGreaterThan(3);
      expect(restarted).toBe(true);
      expect(stats.savepointCommits).toBeGreaterThan(0);
      expect(sources.length).toBeGreaterThan(0);
      expect(added!.lateGapsBefore).toBeGreaterThan(0);
    } finally {
      writing.abort();
      await Promise.allSettled([...writers, ...waves]);
      for (const i of instances) i.child.kill('SIGTERM');
      await Promise.all(instances.map((i) => i.exited));
    }
  }, 240_000);
});
