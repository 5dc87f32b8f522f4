import net from 'node:net';

/**
 * A TCP proxy in front of PostgreSQL that hands the client every ReadyForQuery message ('Z') in a read of its own,
 * a few milliseconds after what preceded it: what a busy network or a connection pooler does now and then. It shows
 * the client's view of the transaction status lagging one message behind an error it has already been given.
 */
export async function startSplittingProxy(databaseUrl: string, delayMs = 5) {
  const target = new URL(databaseUrl);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    let pending = Buffer.alloc(0);
    let chain = Promise.resolve();
    upstream.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      // Whole backend messages only: a type byte, then a length that counts itself.
      const messages: Buffer[] = [];
      while (pending.length >= 5 && pending.length >= 1 + pending.readInt32BE(1)) {
        const size = 1 + pending.readInt32BE(1);
        messages.push(pending.subarray(0, size));
        pending = pending.subarray(size);
      }
      chain = chain.then(async () => {
        for (const message of messages) {
          if (message[0] === 0x5a /* 'Z' */) await new Promise((resolve) => setTimeout(resolve, delayMs));
          if (!client.destroyed) client.write(message);
        }
      });
    });
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  const url = new URL(databaseUrl);
  url.hostname = '127.0.0.1';
  url.port = String(port);
  return {
    url: url.toString(),
    async stop() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
