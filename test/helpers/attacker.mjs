// The attacking side of test/security, run in a worker thread so that building and sending tens of megabytes
// does not block the event loop of the gateway under test (which runs on the main thread).
import { connect } from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';

/** prefix + repeat × times + suffix, built here rather than copied from the main thread. */
const build = ({ prefix = '', repeat = '', times = 0, suffix = '' }) =>
  prefix + repeat.repeat(times) + suffix;

function send(baseUrl, job) {
  const { hostname, port } = new URL(baseUrl);
  const body = build(job.body ?? {});
  const headers = { host: `${hostname}:${port}`, connection: 'close', ...job.headers };
  if (job.chunked) headers['transfer-encoding'] = 'chunked';
  else headers['content-length'] = String(Buffer.byteLength(body));
  const head = `${job.method ?? 'POST'} ${job.path ?? '/graphql'} HTTP/1.1\r\n${Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('')}\r\n`;
  const started = performance.now();
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    const received = [];
    socket.on('data', (chunk) => received.push(chunk));
    // A server that answers early and closes makes the rest of the write fail: expected.
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      const text = Buffer.concat(received).toString('utf8');
      const status = Number(text.split('\r\n', 1)[0]?.split(' ')[1] ?? 0);
      resolve({ status, elapsedMs: performance.now() - started, head: text.slice(0, 2_000) });
    });
    socket.write(head);
    if (!job.chunked) return socket.end(body);
    const CHUNK = 64 * 1024;
    for (let offset = 0; offset < body.length; offset += CHUNK) {
      const piece = body.slice(offset, offset + CHUNK);
      socket.write(`${Buffer.byteLength(piece).toString(16)}\r\n${piece}\r\n`);
    }
    socket.end('0\r\n\r\n');
  });
}

const { baseUrl, jobs, concurrency = 1 } = workerData;
const answers = new Array(jobs.length);
let next = 0;
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (next < jobs.length) {
      const index = next++;
      answers[index] = await send(baseUrl, jobs[index]);
    }
  }),
);
parentPort.postMessage(answers);
