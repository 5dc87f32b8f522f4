import * as pgListenModule from 'pg-listen';
import type { Logger } from 'pino';
import { connectionConfig } from '../db/connection.js';

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
