import * as pgListenModule from 'pg-listen';
import type { Logger } from 'pino';
import { connectionConfig } from '../db/connection.js';

/**
 * A level-triggered wake-up: `notify()` wakes every current waiter, and a notify with nobody waiting is remembered
 * so the next `wait()` returns at once (no lost wake-up between "checked for work" and "started waiting").
 */
export class WakeSignal {
  private pending = false;
  private waiters = new Set<() => void>();

  notify(): void {
    if (this.waiters.size === 0) {
      this.pending = true;
      return;
    }
    for (const wake of [...this.waiters]) wake();
  }

  /** Resolves 'notified', 'timeout' after `ms`, or 'aborted'. */
  wait(ms: number, signal?: AbortSignal): Promise<'notified' | 'timeout' | 'aborted'> {
    if (signal?.aborted) return Promise.resolve('aborted');
    if (this.pending) {
      this.pending = false;
      return Promise.resolve('notified');
    }
    return new Promise((resolve) => {
      const done = (outcome: 'notified' | 'timeout' | 'aborted') => {
        clearTimeout(timer);
        this.waiters.delete(onNotify);
        signal?.removeEventListener('abort', onAbort);
        resolve(outcome);
      };
      const onNotify = () => done('notified');
      const onAbort = () => done('aborted');
      const timer = setTimeout(() => done('timeout'), Math.max(0, ms));
      this.waiters.add(onNotify);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

// Under NodeNext the CommonJS default export types as a namespace: take `.default` when present.
type CreateSubscriber = typeof pgListenModule.default.default;
const interop = pgListenModule.default as unknown as CreateSubscriber | { default: CreateSubscriber };
const createSubscriber: CreateSubscriber = typeof interop === 'function' ? interop : interop.default;

export interface NotificationListenerOptions {
  connectionString: string;
  channels: string[];
  log: Logger;
  onNotification: (channel: string, payload: string | undefined) => void;
  /** Called after every (re)connection: notifications sent meanwhile are gone, so read once to catch up. */
  onConnected: () => void;
  /** Connection health check interval: an idle LISTEN connection can die silently. */
  paranoidCheckMs?: number;
}

/**
 * LISTEN on a dedicated connection (never a pooled one). A notification is only a latency hint: correctness comes
 * from reading by position, and the poll covers writers that send none and listeners that are down.
 */
export class NotificationListener {
  private subscriber: ReturnType<typeof createSubscriber> | undefined;
  private stopped = false;
  private restartTimer: NodeJS.Timeout | undefined;
  connected = false;

  constructor(private readonly options: NotificationListenerOptions) {}

  async start(): Promise<void> {
    this.stopped = false;
    await this.open();
  }

  private async open(): Promise<void> {
    const { options } = this;
    const subscriber = createSubscriber(connectionConfig(options.connectionString, 'listener'), {
      // The default (3 s) gives up during any real outage; we ride it out and log each attempt instead.
      retryTimeout: 365 * 24 * 3600 * 1000,
      retryInterval: (attempt) => Math.min(5_000, 100 * 2 ** attempt),
      paranoidChecking: options.paranoidCheckMs ?? 10_000,
      parse: (payload) => payload,
    });
    this.subscriber = subscriber;
    subscriber.events.on('notification', ({ channel, payload }) => options.onNotification(channel, payload));
    subscriber.events.on('reconnect', (attempt) => {
      this.connected = false;
      options.log.warn({ attempt }, 'notification listener reconnecting; polling carries on meanwhile');
    });
    subscriber.events.on('connected', () => {
      this.connected = true;
      options.log.info('notification listener connected');
      options.onConnected();
    });
    subscriber.events.on('error', (error) => {
      this.connected = false;
      options.log.error({ err: error }, 'notification listener failed; starting a new one');
      this.scheduleRestart();
    });
    try {
      await subscriber.connect();
      for (const channel of options.channels) await subscriber.listenTo(channel);
      this.connected = true;
      options.onConnected();
    } catch (error) {
      this.connected = false;
      options.log.warn({ err: error }, 'notification listener could not connect; polling meanwhile, retrying');
      this.scheduleRestart();
    }
  }

  private scheduleRestart(): void {
    if (this.stopped || this.restartTimer) return;
    const old = this.subscriber;
    this.subscriber = undefined;
    void old?.close().catch(() => {});
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (!this.stopped) void this.open();
    }, 1_000);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    this.connected = false;
    await this.subscriber?.close().catch(() => {});
    this.subscriber = undefined;
  }
}
