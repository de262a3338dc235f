// Wakes up readers following a task (logs --follow, submit --wait) when its output or status
// changes. A wait also ends after a timeout, so followers re-check the store even if a change
// happened elsewhere (another master sharing the store).

export class TaskWatch {
  private readonly waiters = new Map<string, Set<() => void>>();

  notify(taskId: string): void {
    const waiting = this.waiters.get(taskId);
    if (!waiting) return;
    this.waiters.delete(taskId);
    for (const wake of waiting) wake();
  }

  wait(taskId: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      let waiting = this.waiters.get(taskId);
      if (!waiting) {
        waiting = new Set();
        this.waiters.set(taskId, waiting);
      }
      const wake = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.get(taskId)?.delete(wake);
        resolve();
      }, timeoutMs);
      waiting.add(wake);
    });
  }

  get followers(): number {
    let count = 0;
    for (const waiting of this.waiters.values()) count += waiting.size;
    return count;
  }
}
