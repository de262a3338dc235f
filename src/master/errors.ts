// Failures the HTTP API reports to clients, with the status code and error code they map to.

export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const taskNotFound = (id: string): ApiError => new ApiError(404, 'task_not_found', `task ${id} not found`);
