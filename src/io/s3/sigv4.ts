/**
 * AWS Signature Version 4 for S3 requests (header signing), on node:crypto: the canonical
 * request, the string to sign, the derived key (cached per day and region). Written here rather
 * than taken from a package: it is ~60 lines, and measured start-up cost is that of node:crypto,
 * which every program loads anyway (docs/ARCHITECTURE.md). Pure; the caller gives the time.
 * Payloads: the caller passes the body's SHA-256 hex, or UNSIGNED_PAYLOAD (allowed by S3 for
 * header-signed requests: large parts are not hashed twice).
 */
import { createHash, createHmac } from 'node:crypto';
import type { Credentials } from './config.js';

export const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

export function sha256Hex(data: Uint8Array | string): string { return createHash('sha256').update(data).digest('hex'); }

/** RFC 3986 encoding as SigV4 wants it (slash kept in paths). */
export function uriEncode(s: string, keepSlash: boolean): string {
  let out = encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  if (keepSlash) out = out.replace(/%2F/g, '/');
  return out;
}

/** The canonical query string of [name, value] pairs. */
export function canonicalQuery(query: [string, string][]): string {
  return query.map(([k, v]) => [uriEncode(k, false), uriEncode(v, false)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`).join('&');
}

const keyCache = new Map<string, Buffer>();

function signingKey(secret: string, date: string, region: string): Buffer {
  const id = `${date}/${region}/${sha256Hex(secret)}`;
  let k = keyCache.get(id);
  if (!k) {
    const kDate = createHmac('sha256', `AWS4${secret}`).update(date).digest();
    const kRegion = createHmac('sha256', kDate).update(region).digest();
    const kService = createHmac('sha256', kRegion).update('s3').digest();
    k = createHmac('sha256', kService).update('aws4_request').digest();
    if (keyCache.size > 16) keyCache.clear();
    keyCache.set(id, k);
  }
  return k;
}

export interface SignInput {
  method: string;
  host: string;
  /** Already encoded path (what goes on the request line). */
  path: string;
  query: [string, string][];
  /** Lower-case names; host, x-amz-date and x-amz-content-sha256 are added here. */
  headers: Record<string, string>;
  payloadHash: string;
  region: string;
  credentials: Credentials;
  now: Date;
}

/** The headers to send (input headers plus host, x-amz-*, authorization). */
export function signRequest(r: SignInput): Record<string, string> {
  const amzDate = r.now.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const date = amzDate.slice(0, 8);
  const headers: Record<string, string> = { ...r.headers, host: r.host, 'x-amz-date': amzDate, 'x-amz-content-sha256': r.payloadHash };
  if (r.credentials.sessionToken) headers['x-amz-security-token'] = r.credentials.sessionToken;
  const names = Object.keys(headers).map((n) => n.toLowerCase()).sort();
  const lower: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) lower[k.toLowerCase()] = String(v).trim().replace(/\s+/g, ' ');
  const signedHeaders = names.join(';');
  const canonical = [r.method, r.path, canonicalQuery(r.query), names.map((n) => `${n}:${lower[n]}\n`).join(''), signedHeaders, r.payloadHash].join('\n');
  const scope = `${date}/${r.region}/s3/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonical)].join('\n');
  const sig = createHmac('sha256', signingKey(r.credentials.secretAccessKey, date, r.region)).update(toSign).digest('hex');
  headers.authorization = `AWS4-HMAC-SHA256 Credential=${r.credentials.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${sig}`;
  return headers;
}
