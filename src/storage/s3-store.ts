import { createReadStream } from 'node:fs';
import path from 'node:path';
import { DeleteObjectCommand, GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { S3Settings } from '../config.js';
import type { ResultStore } from './result-store.js';

/** Deadlines of one S3 request; an upload's parts each get them, and the whole copy has its own. */
const CONNECT_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 60_000;

/**
 * Copies in an S3-compatible bucket (AWS, MinIO, R2...): uploaded in parts as the file is read, played through
 * presigned GET URLs, so the bucket stays private. Loaded only when configured, like the Redis bus.
 */
export class S3ResultStore implements ResultStore {
  readonly kind = 's3';
  private readonly client: S3Client;
  /** Signs the URLs players get: a client of its own when they reach the bucket by another address. */
  private readonly presigner: S3Client;

  constructor(
    private readonly settings: S3Settings,
    readonly stagingDir: string,
  ) {
    this.client = createClient(settings, settings.endpoint);
    this.presigner = settings.publicEndpoint ? createClient(settings, settings.publicEndpoint) : this.client;
  }

  async put(key: string, stagedFile: string, contentType: string, signal: AbortSignal): Promise<void> {
    const upload = new Upload({
      client: this.client,
      params: {
        Bucket: this.settings.bucket,
        Key: this.objectKey(key),
        Body: createReadStream(stagedFile),
        ContentType: contentType,
      },
    });
    const abort = () => void upload.abort();
    signal.addEventListener('abort', abort, { once: true });
    try {
      signal.throwIfAborted();
      await upload.done();
    } finally {
      signal.removeEventListener('abort', abort);
    }
  }

  url(key: string, ttlS: number): Promise<string> {
    const command = new GetObjectCommand({ Bucket: this.settings.bucket, Key: this.objectKey(key) });
    return getSignedUrl(this.presigner, command, { expiresIn: ttlS });
  }

  async remove(key: string): Promise<void> {
    await this.client.send(
      new DeleteObjectCommand({ Bucket: this.settings.bucket, Key: this.objectKey(key) }),
      { abortSignal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) },
    );
  }

  async close(): Promise<void> {
    this.client.destroy();
    this.presigner.destroy();
  }

  private objectKey(key: string): string {
    return path.posix.join(this.settings.prefix, key);
  }
}

function createClient(settings: S3Settings, endpoint: string | undefined): S3Client {
  return new S3Client({
    region: settings.region,
    ...(endpoint ? { endpoint } : {}),
    forcePathStyle: settings.forcePathStyle,
    ...(settings.credentials ? { credentials: settings.credentials } : {}),
    requestHandler: { connectionTimeout: CONNECT_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS },
    // Checksums only where S3 requires them: many S3-compatible servers refuse the newer default ones.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}
