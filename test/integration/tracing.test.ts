import { Writable } from 'node:stream';
import { SpanKind } from '@opentelemetry/api';
import {
  InMemorySpanExporter,
  NodeTracerProvider,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-node';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TASK_ID } from '../../src/telemetry/tracing.js';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { createTestDatabase, databaseKinds, type TestDatabase } from '../helpers/database.js';
import { createTaskOk, signToken, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import {
  connectWs,
  type Received,
  subscribeFetchSse,
  TASK_UPDATED,
  type TaskUpdatedData,
  tasksOf,
  type WsConnection,
} from '../helpers/subscriptions.js';

// The process's tracer provider, as an operator's OTLP exporter would be, but keeping spans in memory.
const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
provider.register();
afterAll(() => provider.shutdown());

const spans = () => exporter.getFinishedSpans();
const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;
const named = (name: string, taskId?: string) =>
  spans().filter(
    (span) => span.name === name && (taskId === undefined || span.attributes[TASK_ID] === taskId),
  );
const childrenOf = (parent: ReadableSpan, name: string) =>
  spans().filter((span) => span.name === name && parentOf(span) === parent.spanContext().spanId);

describe.each(databaseKinds())('one task traced end to end on %s', (kind) => {
  let database: TestDatabase;
  let kie: SimulatorServer;
  let creator: TestGateway;
  /** On Postgres a second instance: its subscriber hears the change through NOTIFY, with the trace in it. */
  let watcher: TestGateway;
  const logLines: Array<Record<string, unknown>> = [];

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    kie = await startSimulatorServer({ knobs: { stepMs: 1_000, createDelayMs: 200 } });
    const capture = new Writable({
      write(chunk, _encoding, done) {
        for (const line of String(chunk).split('\n').filter(Boolean)) logLines.push(JSON.parse(line));
        done();
      },
    });
    creator = await startTestGateway({ database, kieUrl: kie.url, logger: pino({ level: 'info' }, capture) });
    watcher = kind === 'postgres' ? await startTestGateway({ database, kieUrl: kie.url }) : creator;
  });
  afterAll(async () => {
    await creator?.stop();
    if (watcher !== creator) await watcher?.stop();
    await kie?.close();
    await database?.dispose();
  });

  it('follows the mutation, the kie call, the callback, the publish and the delivery to each subscriber', async () => {
    exporter.reset();
    const user = 'tracing-user';
    const created = await createTaskOk(creator, undefined, user);
    const ws: WsConnection = await connectWs(watcher, user);
    const overWs: Received<TaskUpdatedData> = ws.subscribe<TaskUpdatedData>({
      query: TASK_UPDATED,
      variables: { id: created.id },
    });
    const overSse = await subscribeFetchSse<TaskUpdatedData>(creator, user, {
      query: TASK_UPDATED,
      variables: { id: created.id },
    });
    try {
      await Promise.all([overWs.waitForEnd(), overSse.waitForEnd()]);
      // Each saw the task unfinished first, so the success reached it live, through a signal.
      for (const received of [overWs, overSse]) {
        const states = tasksOf(received).map((task) => task.state);
        expect(states[0]).not.toBe('SUCCEEDED');
        expect(states.at(-1)).toBe('SUCCEEDED');
      }
    } finally {
      await ws.dispose();
    }

    // The mutation, and under it the submit and kie's createTask.
    const [mutation] = spans().filter((span) => span.name === 'graphql.mutation createAvatarTask');
    expect(mutation?.attributes['gateway.transport']).toBe('http');
    const submits = childrenOf(mutation as ReadableSpan, 'task.submit');
    expect(submits.map((span) => span.attributes[TASK_ID])).toEqual([taskIdOf(created.id)]);
    const [kieCreate] = childrenOf(submits[0] as ReadableSpan, 'kie.createTask');
    expect(kieCreate?.kind).toBe(SpanKind.CLIENT);
    expect(kieCreate?.attributes['kie.code']).toBe(200);

    // The two subscriptions, each started on its own transport.
    const subscriptions = spans().filter((span) => span.name === 'graphql.subscription avatarTaskUpdated');
    expect(subscriptions.map((span) => span.attributes['gateway.transport']).sort()).toEqual([
      'graphql-ws',
      'sse',
    ]);

    // The success, seen by kie's callback or by a poll (a watched task is polled early), is published under
    // that span, and delivered to both subscribers as children of the publish.
    const id = taskIdOf(created.id);
    const finalPublish = named('task.publish', id).find(
      (span) => span.attributes['avatar.task.state'] === 'SUCCEEDED',
    );
    expect(finalPublish?.kind).toBe(SpanKind.PRODUCER);
    const observer = spans().find(
      (span) => span.spanContext().spanId === parentOf(finalPublish as ReadableSpan),
    );
    expect(['kie.callback', 'poller.check']).toContain(observer?.name);
    expect(observer?.attributes[TASK_ID]).toBe(id);
    const deliveries = childrenOf(finalPublish as ReadableSpan, 'avatarTaskUpdated.deliver');
    expect(deliveries).toHaveLength(2);
    for (const delivery of deliveries) {
      expect(delivery.spanContext().traceId).toBe(finalPublish?.spanContext().traceId);
      expect(delivery.attributes[TASK_ID]).toBe(id);
      expect(delivery.attributes['avatar.delivered']).toBe(1);
    }
    // Every span of the task carries its id, so a trace backend finds all of them by one attribute.
    for (const span of [...submits, ...named('kie.callback', id), ...named('poller.check', id)]) {
      expect(span.attributes[TASK_ID]).toBe(id);
    }
  });

  it('counts operations from HTTP, SSE and graphql-ws in /metrics', async () => {
    const text = await (await fetch(`${watcher.url}/metrics`)).text();
    const creatorText = watcher === creator ? text : await (await fetch(`${creator.url}/metrics`)).text();
    expect(creatorText).toMatch(
      /avatar_gateway_graphql_operations_total\{transport="http",type="mutation",field="createAvatarTask",outcome="ok"\} [1-9]/,
    );
    expect(creatorText).toMatch(
      /avatar_gateway_graphql_operations_total\{transport="sse",type="subscription",field="avatarTaskUpdated",outcome="ok"\} [1-9]/,
    );
    expect(text).toMatch(
      /avatar_gateway_graphql_operations_total\{transport="graphql-ws",type="subscription",field="avatarTaskUpdated",outcome="ok"\} [1-9]/,
    );
  });

  it('gives each request an id: in its answer, its errors and its log lines', async () => {
    const requestId = `client-request-${kind}-0001`;
    const response = await fetch(creator.graphqlUrl, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${await signToken('tracing-user')}`,
        'x-request-id': requestId,
      },
      body: JSON.stringify({
        query:
          'mutation { createAvatarTask(input: { imageUrl: "https://example.com/a.png", audioUrl: "https://example.com/a.mp3" }) { __typename } }',
      }),
    });
    expect(response.headers.get('x-request-id')).toBe(requestId);
    expect((await response.json()).data.createAvatarTask.__typename).toBe('CreateAvatarTaskSuccess');
    // kie's createTask was logged while serving that request.
    expect(logLines.some((line) => line.requestId === requestId && line.msg === 'kie call')).toBe(true);

    const failed = await fetch(creator.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'not an id!' },
      body: JSON.stringify({ query: '{ nosuchfield }' }),
    });
    const generated = failed.headers.get('x-request-id');
    expect(generated).toMatch(/^[0-9a-f-]{36}$/);
    const body = await failed.json();
    expect(body.errors[0].extensions.requestId).toBe(generated);
  });
});

/** The database id inside a global id ("AvatarTask:<uuid>", base64). */
function taskIdOf(globalId: string): string {
  return Buffer.from(globalId, 'base64').toString('utf8').split(':').slice(1).join(':');
}
