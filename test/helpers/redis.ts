/**
 * A Redis server for the queue tests: Debian's redis-server, started on a free loopback port with no
 * persistence and stopped after. Where it is not installed a suite skips and says why, unless
 * VOLSEG_REQUIRE_REDIS=1 (CI: `.ci/run` installs it), where that is a failure.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';

/** VOLSEG_REQUIRE_REDIS=1: a missing redis-server is a failure, not a skip. */
export const required = process.env.VOLSEG_REQUIRE_REDIS === '1';

/** Why the Redis suites cannot run here (null when they can); warns, or throws under VOLSEG_REQUIRE_REDIS=1. */
export function redisSkipReason(suite: string): string | null {
  const probe = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  const why = probe.error || probe.status !== 0 ? 'redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)' : null;
  if (why) {
    if (required) throw new Error(`VOLSEG_REQUIRE_REDIS=1 but ${why}`);
    console.warn(`${suite} skipped: ${why}`);
  }
  return why;
}

export interface RedisServer {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (the kernel's choice). */
function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => done(port));
    });
  });
}

/** Starts `redis-server --port <free> --bind 127.0.0.1 --save '' --appendonly no`; resolves once it accepts connections. */
export async function startRedis(): Promise<RedisServer> {
  const port = await freePort();
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  await new Promise<void>((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`redis-server did not start on port ${port} in 10 s:\n${out}`)), 10_000);
    const watch = (d: Buffer): void => {
      out += d;
      if (/Ready to accept connections/.test(out)) {
        clearTimeout(timer);
        done();
      }
    };
    child.stdout!.on('data', watch);
    child.stderr!.on('data', watch);
    child.on('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`redis-server exited with code ${code}:\n${out}`));
    });
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop: () =>
      new Promise<void>((done) => {
        if (child.exitCode !== null || child.signalCode !== null) return done();
        child.once('exit', () => done());
        child.kill('SIGKILL');
      }),
  };
}
