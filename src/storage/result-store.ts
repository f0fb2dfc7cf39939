/** Where the gateway keeps its copies of result videos: a folder it serves itself, or an S3 bucket. */
export interface ResultStore {
  readonly kind: 'local' | 's3';
  /** A folder for downloads in progress (on the folder's own file system, so a finished one is renamed). */
  readonly stagingDir: string;
  /** Moves or uploads a downloaded file to `key`; `signal` abandons it. */
  put(key: string, stagedFile: string, contentType: string, signal: AbortSignal): Promise<void>;
  /** A URL that plays the copy (GET with Range) for at least `ttlS` seconds. */
  url(key: string, ttlS: number): Promise<string>;
  /** Deletes the copy; a copy already gone is no error. */
  remove(key: string): Promise<void>;
  close(): Promise<void>;
}

/** The key of a task's result at `position`: one place for it, as the local route parses it back. */
export function resultKey(taskId: string, position: number): string {
  return `${taskId}/${position}.mp4`;
}

export const RESULT_KEY_PATTERN =
  /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\/\d{1,4}\.mp4$/;
