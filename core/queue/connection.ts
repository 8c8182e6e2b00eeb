/**
 * Where the queue lives: a Redis server named by a `redis://[user:password@]host:port[/db]` URL (`rediss://`
 * for TLS), checked once before anything is enqueued or pulled, so that a wrong host or a stopped server is
 * one sentence, not ioredis's endless reconnect log.
 */
import { Redis } from 'ioredis';

/** The BullMQ queue every coordinator enqueues into and every worker pulls from (jobs carry their experiment). */
export const TRIAL_QUEUE = 'volseg-trials';

/** A problem with the queue said for a person: what, where (the flag, the URL, the host and port), what to do. */
export class QueueError extends Error {}

export interface RedisTarget {
  url: string;
  /** The URL as logs and errors show it: a password replaced by ***. */
  shown: string;
  host: string;
  port: number;
}

/** Reads `--queue`'s URL; a URL that is not redis:// or rediss:// is an error that says the form. */
export function parseRedisUrl(url: string): RedisTarget {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new QueueError(`--queue ${url.replace(/:[^:@/]*@/, ':***@')}: not a URL; expected redis://host:port, e.g. --queue redis://127.0.0.1:6379`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:')
    throw new QueueError(`--queue ${u.protocol}//${u.host}: the scheme is ${u.protocol.replace(/:$/, '')}; expected redis://host:port (or rediss:// for TLS)`);
  if (!u.hostname) throw new QueueError(`--queue ${u.protocol}//: no host; expected redis://host:port`);
  const port = u.port === '' ? 6379 : Number(u.port);
  if (u.password) u.password = '***';
  return { url, shown: u.password ? u.toString() : url, host: u.hostname, port };
}

/** BullMQ's connection options for a URL (BullMQ's workers need maxRetriesPerRequest null). */
export function connectionOptions(target: RedisTarget): { url: string; maxRetriesPerRequest: null } {
  return { url: target.url, maxRetriesPerRequest: null };
}

/**
 * Connects once, without retrying, and pings; throws a QueueError naming the host and port that could not
 * be reached and what to do.
 */
export async function checkRedis(target: RedisTarget, timeoutMs = 5000): Promise<void> {
  const client = new Redis(target.url, { lazyConnect: true, connectTimeout: timeoutMs, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  let lastError: Error | null = null;
  client.on('error', (e: Error) => (lastError = e));
  try {
    await client.connect();
    await client.ping();
  } catch (e) {
    const why = (lastError as Error | null)?.message ?? (e as Error).message;
    throw new QueueError(
      `cannot reach Redis at ${target.host}:${target.port} (--queue ${target.shown}): ${why}. ` +
        `Start a server there (Debian: apt-get install redis-server; or redis-server --port ${target.port}), or check the host, the port and the firewall`,
    );
  } finally {
    client.disconnect();
  }
}
