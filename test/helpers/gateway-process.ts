import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TEST_JWT_SECRET } from './gateway.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

export interface GatewayProcess {
  url: string;
  graphqlUrl: string;
  wsUrl: string;
  child: ChildProcess;
  /** Everything the process wrote, stdout and stderr together. */
  output(): string;
  /** Resolves with the exit code (or the signal that ended it) and when, performance.now(). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  /** Ends it for good (SIGKILL) if it still runs. */
  kill(): void;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export interface GatewayProcessOptions {
  /** Unset: the embedded PGlite in a fresh DATA_DIR. */
  databaseUrl?: string;
  /** Unset: the built-in simulator, which production refuses, so NODE_ENV is development then. */
  kieUrl?: string;
  env?: Record<string, string>;
  /** `source` runs src/main.ts through tsx; `build` runs the compiled dist/main.js as the image does. */
  entry?: 'source' | 'build';
}

/**
 * The gateway as production runs it: its own process (src/main.ts, or the compiled dist/main.js), configured only through its
 * environment (NODE_ENV=production, HS256 auth with the test secret, a standalone kie at `kieUrl`), so a test
 * can signal it, kill it, and time its exit. Ready once /readyz answers 200.
 */
export async function startGatewayProcess(options: GatewayProcessOptions): Promise<GatewayProcess> {
  const gateway = await spawnGatewayProcess(options);
  const { child, url } = gateway;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the gateway exited at start:\n${gateway.output()}`);
    const ready = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2_000) }).then(
      (response) => response.status === 200,
      () => false,
    );
    if (ready) return gateway;
    if (Date.now() > deadline) {
      gateway.kill();
      throw new Error(`the gateway did not get ready within 60 s:\n${gateway.output()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** The same process, not waited for: for a start that is meant to fail. */
export async function spawnGatewayProcess(options: GatewayProcessOptions): Promise<GatewayProcess> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const entry = options.entry === 'build' ? ['dist/main.js'] : ['--import', 'tsx', 'src/main.ts'];
  const child = spawn(process.execPath, entry, {
    cwd: root,
    env: {
      PATH: process.env.PATH ?? '',
      NODE_ENV: options.kieUrl ? 'production' : 'development',
      HOST: '127.0.0.1',
      PORT: String(port),
      PUBLIC_URL: url,
      DATA_DIR: await mkdtemp(path.join(tmpdir(), 'avatar-gateway-process-')),
      ...(options.databaseUrl ? { DATABASE_URL: options.databaseUrl } : {}),
      ...(options.kieUrl ? { KIE_API_URL: options.kieUrl, KIE_API_KEY: 'test-kie-key' } : {}),
      AUTH_JWT_SECRET: TEST_JWT_SECRET,
      // The inputs are placeholder URLs that exist nowhere.
      CHECK_INPUT_URLS: 'false',
      LOG_LEVEL: 'warn',
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk) => {
    output += chunk;
  });
  child.stderr?.on('data', (chunk) => {
    output += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, at: performance.now() })),
  );
  const gateway: GatewayProcess = {
    url,
    graphqlUrl: `${url}/graphql`,
    wsUrl: `ws://127.0.0.1:${port}/graphql`,
    child,
    output: () => output,
    exited,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
  return gateway;
}
