import { connect } from 'node:net';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

/** A gateway configured as production (NODE_ENV=production) in front of a standalone kie simulator. */
export interface ProductionGateway extends TestGateway {
  kie: SimulatorServer;
}

export async function startProductionGateway(env: Record<string, string> = {}): Promise<ProductionGateway> {
  const database: TestDatabase = await createTestDatabase('pglite');
  const kie = await startSimulatorServer({ knobs: { stepMs: 50 } });
  const gateway = await startTestGateway({
    database,
    kieUrl: kie.url,
    env: { NODE_ENV: 'production', ...env },
  });
  return {
    ...gateway,
    kie,
    stop: async () => {
      await gateway.stop();
      await kie.close();
      await database.dispose();
    },
  };
}

/**
 * Sends `raw` bytes on a plain TCP socket and returns everything the server answered until it closed the
 * connection or `waitMs` passed: for requests no HTTP client would send (a malformed Host, slow headers).
 */
export function rawRequest(url: string, raw: string, waitMs = 5_000): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks).toString('utf8'));
    };
    const timer = setTimeout(done, waitMs);
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('end', done);
    socket.on('close', done);
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.write(raw);
  });
}
