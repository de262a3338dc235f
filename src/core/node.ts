// Worker nodes as the master sees them.

export type NodeStatus = 'online' | 'draining' | 'offline';

export interface NodeInfo {
  /** Node id; workers are identified by their unique name. */
  id: string;
  name: string;
  /** Random id of the worker process currently (or last) behind this name. */
  instanceId: string;
  status: NodeStatus;
  labels: Record<string, string>;
  concurrency: number;
  running: number;
  loadAverage: number;
  version: string;
  lastSeenAt: number;
  registeredAt: number;
}

export interface NodeView extends Omit<NodeInfo, 'lastSeenAt' | 'registeredAt'> {
  lastSeenAt: string;
  registeredAt: string;
}

export function toNodeView(node: NodeInfo): NodeView {
  return {
    ...node,
    lastSeenAt: new Date(node.lastSeenAt).toISOString(),
    registeredAt: new Date(node.registeredAt).toISOString(),
  };
}
