import type pg from 'pg';
import type { StoreNames } from '../db/identifiers.js';
import type { StoredEvent } from '../store/types.js';
import { readEvents } from './native.js';
import { covers, goesOn, pageBound, pagesToDrop, slicePage, withinBudget, type Page, type Slice } from './pages.js';

/**
 * One read for many projections (as Emmett's consumer fans a batch out to its processors): the projections of an
 * instance whose checkpoints lie in the same page share that page's read, each applying it in its own transaction
 * with its own checkpoint compare-and-set, so isolation is unchanged. Every batch of the normal path reads through it,
 * catching up and live: a live wake-up is read once, by the first batch that needs the new stretch (up to the newest H
 * any batch has brought), and the others take it from there.
 * A batch takes its events from as many consecutive pages as its H and size allow (goesOn), reading only what no page
 * holds yet: live, pages are as short as the steps of H, and one page per batch left a projection behind for good.
 * A full page starts the read of the next one at once (the read-ahead), which the others find read when they get there.
 *
 * Why it is safe across transactions: events at or below H never change (a commit that comes later is late, and a
 * projection gets it through the late path whatever it read), so a page read in one snapshot is what any projection
 * at or below that H would read in its own.
 *
 * A projection that is slower, failed, replaying or just added is not waited for: the pages it needs may be gone
 * (at most max(`maxPages`, two per reader) are held), then it reads on its own, and the next page it needs ends where
 * the pages of the others start (pageBound), so it joins them there. Memory: that many pages of at most a batch each.
 */
export interface SharedReaderOptions {
  pool: pg.Pool;
  names: StoreNames;
  /** Upper bound on the stored bytes of one page (see --batch-bytes). */
  batchBytes: number;
  /** How many pages are held at least for the projections behind the fastest one (default 8; two per reader if more). */
  maxPages?: number;
  /** Counts each read of the event table (projection_runner_event_reads_total). */
  onRead?: () => void;
}

interface HeldPage {
  after: bigint;
  bound: bigint;
  /** The read; it rejects when the read failed (the page is then forgotten and read again by whoever needs it). */
  read: Promise<Page<StoredEvent>>;
  page?: Page<StoredEvent>;
}

/**
 * About the stored size of an event (its JSON text and names; pg_column_size differs by jsonb's headers and by
 * compression), for the byte bound of a batch that spans pages. Computed only then: live, for a few events.
 */
function estimatedBytes(event: StoredEvent): number {
  return JSON.stringify(event.data).length + JSON.stringify(event.metadata).length + event.type.length + event.streamName.length + 40;
}

export class SharedReader {
  private readonly held = new Map<bigint, HeldPage>();
  /** The checkpoint of every projection reading through this reader now. */
  private readonly readers = new Map<string, bigint>();
  /**
   * The newest H a batch has brought (read from the published row): a new page reads up to it, so that batches that
   * began a moment apart, under different values of H, share one read.
   */
  private newestHighWater = 0n;

  constructor(private readonly options: SharedReaderOptions) {}

  /**
   * A projection's place: `checkpoint` after each batch it commits, undefined when it stops reading (failed,
   * stopped, given up), so that it holds no page.
   */
  position(projection: string, checkpoint: bigint | undefined): void {
    if (checkpoint === undefined) this.readers.delete(projection);
    else this.readers.set(projection, checkpoint);
    this.release();
  }

  /**
   * The events a projection's batch takes: at most `limit` of them after `after`, up to `highWater` (or the H of a page
   * it takes, when newer), from the pages held here, one after the other, and what none holds yet read now on `tx`
   * (the batch's own connection, or the pool: while that one is busy, or before a live batch takes its slot). Beyond its first page a batch keeps to the byte bound by estimated sizes.
   */
  async read(tx: pg.ClientBase | pg.Pool, request: { after: bigint; highWater: bigint; limit: number }): Promise<Slice<StoredEvent>> {
    if (request.highWater <= request.after) return { events: [], full: false, next: request.after };
    if (request.highWater > this.newestHighWater) this.newestHighWater = request.highWater;
    let highWater = request.highWater;
    let slice: Slice<StoredEvent> = { events: [], full: false, next: request.after };
    /** What is left of the byte bound once the batch goes beyond its first page. */
    let budget: number | undefined;
    let page: Page<StoredEvent>;
    for (;;) {
      const after = slice.next;
      page = await this.pageFor(tx, { after, highWater, limit: request.limit });
      // Both are published values of H, and the page was read after its own was published (see slicePage).
      if (page.highWater > highWater) highWater = page.highWater;
      let piece = slicePage(page, { after, highWater, limit: request.limit - slice.events.length });
      if (budget !== undefined) {
        const fitted = withinBudget(piece, after, estimatedBytes, budget);
        piece = fitted.slice;
        budget -= fitted.used;
      }
      const events = slice.events.length === 0 ? piece.events : slice.events.concat(piece.events);
      slice = { events, full: piece.full, next: piece.next };
      if (!goesOn(page, piece, events.length, request.limit)) break;
      // One page is within the byte bound (it was read under it); beyond it, the batch counts.
      budget ??= this.options.batchBytes - events.reduce((sum, e) => sum + estimatedBytes(e), 0);
      if (budget <= 0) break;
    }
    // A page read full means more follows: read the next one ahead, for whoever gets there first.
    if (slice.full && slice.next === page.coveredTo && page.coveredTo < highWater) this.readAhead(page.coveredTo, highWater, request.limit);
    // The event objects are shared by every projection that takes them: read-only (read-only-event.ts). A
    // copy per projection (of the event and its Date) was most of what 16 projections added to one in a catch-up.
    return slice;
  }

  /**
   * The page that serves `request.after`: one held here (waiting for it if it is still being read), else one read
   * now. Finding and registering a page happen without an await in between, so two projections asking at once for
   * the same position share one read.
   */
  private async pageFor(
    tx: pg.ClientBase | pg.Pool,
    request: { after: bigint; highWater: bigint; limit: number },
  ): Promise<Page<StoredEvent>> {
    for (;;) {
      const held = this.findHeld(request.after);
      if (!held) return this.readPage(tx, request.after, request.highWater, request.limit);
      // A read that failed (another projection's, or a read-ahead) is forgotten and read again here.
      const page = held.page ?? (await held.read.catch(() => this.forget(held)));
      // One cut short before this position no longer matches either: look again.
      if (page && covers(page, request.after)) return page;
    }
  }

  private findHeld(after: bigint): HeldPage | undefined {
    for (const held of this.held.values()) {
      if (held.page ? covers(held.page, after) : held.after <= after && after < held.bound) return held;
    }
    return undefined;
  }

  /**
   * Reads the page starting at `after` on the asker's connection (or the pool), up to the newest H known (published: any batch
   * may go up to it); the others at `after` wait for it.
   */
  private async readPage(tx: pg.ClientBase | pg.Pool, after: bigint, requested: bigint, limit: number): Promise<Page<StoredEvent>> {
    const highWater = this.newestHighWater > requested ? this.newestHighWater : requested;
    const held = this.hold(tx, after, pageBound(after, highWater, [...this.held.keys()]), highWater, limit);
    try {
      return await held.read;
    } catch (error) {
      this.forget(held);
      throw error;
    } finally {
      this.release();
    }
  }

  /** The next page, read ahead on the pool; a failure just means its asker reads it itself. */
  private readAhead(after: bigint, highWater: bigint, limit: number): void {
    if (this.held.has(after)) return;
    const bound = pageBound(after, highWater, [...this.held.keys()]);
    if (bound <= after) return;
    const held = this.hold(this.options.pool, after, bound, highWater, limit);
    held.read.then(
      () => this.release(),
      () => this.forget(held),
    );
  }

  /** Registers the read of (after, bound] before anything is awaited, so that a second asker finds it. */
  private hold(db: pg.ClientBase | pg.Pool, after: bigint, bound: bigint, highWater: bigint, limit: number): HeldPage {
    const { names, batchBytes, onRead } = this.options;
    onRead?.();
    const held = { after, bound } as HeldPage;
    held.read = readEvents(db, names, after, bound, limit, undefined, batchBytes).then((read) => {
      const cut = read.events.length === limit || read.truncated;
      held.page = { after, coveredTo: cut ? read.events.at(-1)!.globalPosition : bound, highWater, events: read.events, cut };
      return held.page;
    });
    this.held.set(after, held);
    return held;
  }

  /** Drops a page whose read failed, unless another read has taken its place meanwhile. */
  private forget(held: HeldPage): void {
    if (this.held.get(held.after) === held) this.held.delete(held.after);
  }

  /** Lets go of the pages nobody reads any more, and of the lowest ones beyond maxPages (pagesToDrop). */
  private release(): void {
    const settled: Array<Page<StoredEvent>> = [];
    for (const held of this.held.values()) if (held.page) settled.push(held.page);
    // Two pages per reader at least: projections sharing the work of two cores drift a few pages apart, and a cap
    // below that makes the slowest read on their own again and again.
    const maxPages = Math.max(this.options.maxPages ?? 8, 2 * this.readers.size);
    for (const after of pagesToDrop(settled, [...this.readers.values()], maxPages)) this.held.delete(after);
  }
}
