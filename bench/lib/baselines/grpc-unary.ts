// Baseline: one grpc-js unary round trip at a time over loopback (the floor of any dispatch
// latency), against a tiny NodeService in the bench process answering ReportStatus.
import * as grpc from '@grpc/grpc-js';
import { NodeServiceClient, NodeServiceService, type NodeServiceServer } from '../../../generated/node.js';
import { closedLoop } from '../load.js';
import { summarize, type LatencySummary } from '../stats.js';

export async function unaryRoundTrips(count: number): Promise<LatencySummary> {
  const server = new grpc.Server();
  const service: NodeServiceServer = {
    reportStatus: (_call, callback) => callback(null, { heartbeatIntervalMs: 2000, heartbeatTimeoutMs: 10_000, streamHeartbeats: false }),
    assignTask: (call) => call.end(),
    reportTaskEvents: (call) => call.end(),
  };
  server.addService(NodeServiceService, service);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  const client = new NodeServiceClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const request = { name: 'w', instanceId: 'i', labels: {}, concurrency: 1, running: 0, loadAverage: 0, version: 'bench', draining: false };
  const call = (): Promise<void> =>
    new Promise((resolve, reject) => client.reportStatus(request, (error) => (error ? reject(error) : resolve())));
  try {
    await closedLoop(Math.min(200, count), 1, call); // warm-up: connection and JIT
    return summarize(await closedLoop(count, 1, call));
  } finally {
    client.close();
    server.forceShutdown();
  }
}
