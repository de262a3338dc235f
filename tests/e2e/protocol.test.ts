// SPEC §5 on the wire: a real master driven by a hand-rolled client of node.proto, and a real
// worker facing a hand-rolled master, for what the suites on whole clusters do not show:
// assignment batches only for workers that ask for them, heartbeats on the event stream meaning
// what a ReportStatus call means, and a worker keeping to ReportStatus with a master (an older
// one) that does not offer the stream.
import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import {
  NodeServiceClient,
  NodeServiceService,
  type AssignTaskResponse,
  type ReportStatusRequest,
  type ReportStatusResponse,
  type ReportTaskEventsRequest,
  type ReportTaskEventsResponse,
} from '../../generated/node.js';
import { cleanup, expectNever, randomToken, spawnCli, startMaster, waitFor, waitForNode, type Master } from './harness.js';

afterAll(cleanup, 60_000);

/** One protocol client: a worker's name and process id, and its open calls. */
class WireWorker {
  readonly instanceId = randomUUID();
  readonly received: AssignTaskResponse[] = [];
  private readonly client: NodeServiceClient;
  private readonly metadata = new grpc.Metadata();
  private assign: grpc.ClientReadableStream<AssignTaskResponse> | undefined;
  events: grpc.ClientDuplexStream<ReportTaskEventsRequest, ReportTaskEventsResponse> | undefined;
  eventsError: grpc.ServiceError | undefined;

  constructor(
    master: Master,
    readonly name: string,
  ) {
    this.client = new NodeServiceClient(master.grpcAddress, grpc.credentials.createInsecure());
    this.metadata.set('authorization', `Bearer ${master.token}`);
  }

  status(overrides: Partial<ReportStatusRequest> = {}): ReportStatusRequest {
    return { name: this.name, instanceId: this.instanceId, labels: {}, concurrency: 8, running: 0, loadAverage: 0, version: 'test', draining: false, ...overrides };
  }

  reportStatus(overrides: Partial<ReportStatusRequest> = {}): Promise<ReportStatusResponse> {
    return new Promise((resolve, reject) =>
      this.client.reportStatus(this.status(overrides), this.metadata, (error, response) => (error ? reject(error) : resolve(response))),
    );
  }

  /** Registers, then opens the push channel and the event stream. */
  async connect(acceptsBatches: boolean): Promise<ReportStatusResponse> {
    const answer = await this.reportStatus();
    this.assign = this.client.assignTask({ name: this.name, instanceId: this.instanceId, knownTasks: [], acceptsBatches }, this.metadata);
    this.assign.on('data', (message: AssignTaskResponse) => this.received.push(message));
    this.assign.on('error', () => undefined);
    this.events = this.client.reportTaskEvents(this.metadata);
    this.events.on('data', () => undefined);
    this.events.on('error', (error: grpc.ServiceError) => (this.eventsError = error));
    return answer;
  }

  /** Task ids received, from single assignments and batches alike. */
  assignedIds(): string[] {
    return this.received.flatMap(({ kind }) =>
      kind?.$case === 'assignment' ? [kind.assignment.taskId] : kind?.$case === 'assignments' ? kind.assignments.assignments.map((a) => a.taskId) : [],
    );
  }

  streamHeartbeat(overrides: Partial<ReportStatusRequest> = {}): void {
    this.events!.write({ name: this.name, batchId: 0, events: [], status: this.status(overrides) });
  }

  close(): void {
    this.assign?.cancel();
    this.events?.cancel();
    this.client.close();
  }
}

/** Runs `body` with a fresh protocol client, closed afterwards whatever happens. */
async function withWireWorker(master: Master, name: string, body: (worker: WireWorker) => Promise<void>): Promise<void> {
  const worker = new WireWorker(master, name);
  try {
    await body(worker);
  } finally {
    worker.close();
  }
}

describe('assignment batches', () => {
  // A master each: a worker of an earlier test must not be handed these tasks.
  let master: Master;
  beforeEach(async () => {
    master = await startMaster();
  }, 60_000);

  /** Queues `count` tasks with no worker connected, so that one dispatch pass claims them all. */
  async function queue(count: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) ids.push((await master.submit({ cmd: `echo ${i}` })).id);
    return ids;
  }

  it('go only to a worker that accepts them; others get one assignment per message', async () => {
    const ids = await queue(5);
    await withWireWorker(master, 'wire-plain', async (plain) => {
      await plain.connect(false);
      await waitFor(() => plain.assignedIds().length === 5 || undefined, { what: 'five assignments' });
      expect(plain.received.every((message) => message.kind?.$case === 'assignment')).toBe(true);
      expect(plain.assignedIds().sort()).toEqual([...ids].sort());
    });
  }, 60_000);

  it('carry several tasks in one message to a worker that accepts them', async () => {
    const ids = await queue(5);
    await withWireWorker(master, 'wire-batching', async (batching) => {
      await batching.connect(true);
      await waitFor(() => batching.assignedIds().length === 5 || undefined, { what: 'five assignments' });
      const batches = batching.received.filter((message) => message.kind?.$case === 'assignments');
      expect(batches.length).toBeGreaterThan(0);
      expect(batching.received.length).toBeLessThan(5);
      expect(batching.assignedIds().sort()).toEqual([...ids].sort());
    });
  }, 60_000);
});

describe('heartbeats on the event stream', () => {
  let master: Master;
  beforeAll(async () => {
    master = await startMaster({ heartbeatTimeout: '2s' });
  }, 60_000);

  it('are offered by the master and keep a worker online past the heartbeat timeout', async () => {
    await withWireWorker(master, 'wire-beats', async (worker) => {
      const answer = await worker.connect(true);
      expect(answer.streamHeartbeats).toBe(true);
      await waitForNode(master, 'wire-beats', 'online');
      const timer = setInterval(() => worker.streamHeartbeat(), 300);
      try {
        // Three heartbeat timeouts with no ReportStatus call.
        await expectNever(
          async () => (await master.nodes()).find((node) => node.name === 'wire-beats')?.status !== 'online',
          6000,
          'the worker left online while heartbeating on the stream',
        );
      } finally {
        clearInterval(timer);
      }
      // Silence on the stream is noticed like silence on ReportStatus.
      await waitForNode(master, 'wire-beats', 'offline', 30_000);
    });
  }, 60_000);

  it('carry status changes as ReportStatus does', async () => {
    await withWireWorker(master, 'wire-drain', async (worker) => {
      await worker.connect(true);
      await waitForNode(master, 'wire-drain', 'online');
      worker.streamHeartbeat({ draining: true });
      await waitForNode(master, 'wire-drain', 'draining');
    });
  }, 60_000);

  it('end the stream with INVALID_ARGUMENT when malformed, and harm nothing', async () => {
    await withWireWorker(master, 'wire-bad', async (worker) => {
      await worker.connect(true);
      worker.streamHeartbeat({ concurrency: 0 });
      await waitFor(() => worker.eventsError, { what: 'the event stream to fail' });
      expect(worker.eventsError?.code).toBe(grpc.status.INVALID_ARGUMENT);
      const health = await master.call('GET', '/healthz', { token: null });
      expect(health).toHaveStatus(200);
    });
  }, 60_000);
});

describe('a real worker and the master it meets', () => {
  /** A master that only records how the worker heartbeats; it hands out nothing. */
  async function recordingMaster(token: string, streamHeartbeats: boolean) {
    const seen = { calls: 0, streamBeats: 0, acceptsBatches: undefined as boolean | undefined };
    const server = new grpc.Server();
    server.addService(NodeServiceService, {
      reportStatus: (call: grpc.ServerUnaryCall<ReportStatusRequest, ReportStatusResponse>, callback: grpc.sendUnaryData<ReportStatusResponse>) => {
        if (call.metadata.get('authorization')[0] !== `Bearer ${token}`) return callback({ code: grpc.status.UNAUTHENTICATED });
        seen.calls++;
        callback(null, { heartbeatIntervalMs: 200, heartbeatTimeoutMs: 2000, streamHeartbeats });
      },
      assignTask: (call: grpc.ServerWritableStream<{ acceptsBatches: boolean }, AssignTaskResponse>) => {
        seen.acceptsBatches = call.request.acceptsBatches;
      },
      reportTaskEvents: (call: grpc.ServerDuplexStream<ReportTaskEventsRequest, ReportTaskEventsResponse>) => {
        call.on('data', (request: ReportTaskEventsRequest) => {
          if (request.status) seen.streamBeats++;
        });
        call.on('error', () => undefined);
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
    );
    return { seen, port, server };
  }

  it.each([
    ['offers stream heartbeats: after the first call they all go on the event stream', true],
    ['does not (an older master): every heartbeat stays a ReportStatus call', false],
  ])('%s', async (_what, offered) => {
    const token = randomToken();
    const master = await recordingMaster(token, offered);
    const worker = spawnCli(['worker', '--master', `127.0.0.1:${master.port}`, '--name', 'wire-real', '--token', token]);
    try {
      // Ten intervals' worth of heartbeats.
      await waitFor(() => master.seen.calls + master.seen.streamBeats >= 10 || undefined, { what: 'ten heartbeats' });
      expect(master.seen.acceptsBatches).toBe(true);
      if (offered) {
        expect(master.seen.calls).toBe(1);
        expect(master.seen.streamBeats).toBeGreaterThanOrEqual(9);
      } else {
        expect(master.seen.streamBeats).toBe(0);
        expect(master.seen.calls).toBeGreaterThanOrEqual(10);
      }
    } finally {
      await worker.stop('SIGKILL');
      master.server.forceShutdown();
    }
  }, 60_000);
});
