import type pg from 'pg';
import type { StoreNames } from '../db/identifiers.js';
import { contextFor, raiseHighWater, serves, type ContextRequest } from './batch.js';
import { readBatchContext, type BatchContext } from './checkpoints.js';

interface ContextRead {
  request: ContextRequest;
  /** performance.now() when the read was sent. */
  sentAt: number;
  read: Promise<BatchContext>;
  /** The highest H a leader pass that moved only H announced since the read was sent (advance): its H is raised to it. */
  raisedTo: bigint;
}

/**
 * The batch contexts of an instance's projectors (H, the late notices, the given-up ranges: checkpoints.ts
 * readBatchContext), read once per wake-up for all of them: live, every caught-up projection asks at the same
 * checkpoint for the same H, and one read serves them all (contextFor narrows it to each). Before, each batch read
 * its own with its BEGIN, a round trip per projection per wake-up.
 *
 * A read serves only the requests made after the last wake-up (`advance`: H moved or a late commit was recorded) and
 * no older than `maxAgeMs`: a batch woken by a new H must see it (a context from before it would find nothing to do
 * and the projection would sleep until its poll). Reads in flight are shared too: the first projection of a wake-up
 * sends the read, the others wait for it.
 */
export class BatchContexts {
  private reads: ContextRead[] = [];

  constructor(private readonly options: { pool: pg.Pool; names: StoreNames; maxAgeMs: number }) {}

  /**
   * H moved, or a late commit was recorded: every read so far is too old for the batches this wakes. With
   * `highWater`, this instance's high-water leader moved H there in a pass that changed nothing else (no range given
   * up, no late notice): the reads so far still hold all of that, and only their H is raised (raiseHighWater), so the
   * wake-up costs its projectors no read.
   */
  advance(highWater?: bigint): void {
    if (highWater === undefined) {
      this.reads = [];
      return;
    }
    for (const held of this.reads) if (highWater > held.raisedTo) held.raisedTo = highWater;
  }

  async get(request: ContextRequest): Promise<BatchContext> {
    const now = performance.now();
    this.reads = this.reads.filter((r) => now - r.sentAt <= this.options.maxAgeMs);
    const held = this.reads.find((r) => serves(r.request, request));
    const read = held && (await held.read.catch(() => undefined));
    // Raised as the passes since it was sent announced (raiseHighWater raises to the last of them as through each).
    const context = read && raiseHighWater(read, held.raisedTo);
    return (context && contextFor({ request: held.request, context }, request)) ?? this.send(request);
  }

  /** Reads for `request`, registered before anything is awaited, so that the next asker finds it in flight. */
  private async send(request: ContextRequest): Promise<BatchContext> {
    const { pool, names } = this.options;
    const held: ContextRead = { request, sentAt: performance.now(), read: readOnPool(pool, names, request), raisedTo: 0n };
    this.reads.push(held);
    try {
      return await held.read;
    } catch (error) {
      // A failed read is no one's context: the next asker reads again (this one's batch is retried).
      this.reads = this.reads.filter((r) => r !== held);
      throw error;
    }
  }
}

async function readOnPool(pool: pg.Pool, names: StoreNames, request: ContextRequest): Promise<BatchContext> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    return await readBatchContext(client, names, request);
  } catch (error) {
    // Whatever failed, the session is not reused: a failure here is rare and its cause unknown.
    broken = error as Error;
    throw error;
  } finally {
    client.release(broken);
  }
}
