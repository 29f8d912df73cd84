/**
 * Where an object is and how to reach it, the way the AWS tools take it. A location is
 * `s3://BUCKET/KEY` (signed requests to the configured endpoint, path-style: ENDPOINT/BUCKET/KEY)
 * or an `http(s)://` URL (read as is, unsigned: a public or presigned object).
 * Settings, first found wins: the endpoint from --s3-endpoint (IMGMOUNT_S3_ENDPOINT, which the
 * programs set so that a mount daemon inherits it), AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the
 * profile's endpoint_url, else https://s3.REGION.amazonaws.com; the region from AWS_REGION,
 * AWS_DEFAULT_REGION, the profile's region, else us-east-1; credentials from
 * AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY(/AWS_SESSION_TOKEN), else the profile (AWS_PROFILE,
 * else "default") in ~/.aws/credentials ([NAME]) then ~/.aws/config ([profile NAME] or
 * [default]; AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE move them). No credentials: requests
 * go unsigned. Pure apart from reading the two files; nothing is cached between calls.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { UsageError } from '../../errors/index.js';

export interface Credentials { accessKeyId: string; secretAccessKey: string; sessionToken?: string }

export interface S3Config {
  /** Endpoint without a trailing slash, e.g. http://127.0.0.1:7480. */
  endpoint: string;
  region: string;
  credentials?: Credentials;
}

export type ObjectLocation =
  | { kind: 's3'; bucket: string; key: string }
  | { kind: 'url'; url: string };

/** True for the spellings that name an object rather than a local path. */
export function isRemote(spec: string): boolean {
  return /^(s3|https?):\/\//i.test(spec);
}

/** Parses s3://BUCKET/KEY (KEY may be empty: a prefix) or an http(s) URL. */
export function parseLocation(spec: string): ObjectLocation {
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/i.exec(spec);
  if (m) {
    const bucket = m[1]!;
    if (!/^[a-zA-Z0-9._-]{1,255}$/.test(bucket)) throw new UsageError(`${spec}: not a valid bucket name`);
    return { kind: 's3', bucket, key: m[2] ?? '' };
  }
  if (/^https?:\/\//i.test(spec)) {
    try { new URL(spec); } catch { throw new UsageError(`${spec}: not a valid URL`); }
    return { kind: 'url', url: spec };
  }
  throw new UsageError(`${spec}: not an s3:// or http(s):// location`);
}

/** The location as the user writes it (an http URL without its query: presigned ones carry a signature). */
export function locationText(loc: ObjectLocation): string {
  if (loc.kind === 's3') return `s3://${loc.bucket}/${loc.key}`;
  const u = new URL(loc.url);
  return `${u.origin}${u.pathname}`;
}

/** The "directory" of a location: s3://b/a/b/c -> s3://b/a/b/ */
export function locationDir(spec: string): string {
  const i = spec.lastIndexOf('/');
  return i >= 0 && i >= spec.indexOf('://') + 3 ? spec.slice(0, i + 1) : `${spec}/`;
}

/** Reads an INI file into sections (missing file: none). */
export function parseIni(text: string): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  let cur: Map<string, string> | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const sec = /^\[(.+)\]$/.exec(line);
    if (sec) { cur = new Map(); out.set(sec[1]!.trim(), cur); continue; }
    const kv = /^([^=]+?)\s*=\s*(.*)$/.exec(line);
    if (kv && cur) cur.set(kv[1]!.trim().toLowerCase(), kv[2]!.trim());
  }
  return out;
}

function readIni(path: string): Map<string, Map<string, string>> {
  try { return parseIni(readFileSync(path, 'utf8')); } catch { return new Map(); }
}

/** The settings for s3:// locations from `env` (and the files it points at). */
export function resolveS3Config(env: NodeJS.ProcessEnv = process.env): S3Config {
  const home = env.HOME ?? homedir();
  const profile = env.AWS_PROFILE || 'default';
  const creds = readIni(env.AWS_SHARED_CREDENTIALS_FILE || join(home, '.aws', 'credentials')).get(profile);
  const conf = readIni(env.AWS_CONFIG_FILE || join(home, '.aws', 'config')).get(profile === 'default' ? 'default' : `profile ${profile}`);
  const pick = (k: string): string | undefined => creds?.get(k) || conf?.get(k) || undefined;
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || pick('region') || 'us-east-1';
  let endpoint = env.IMGMOUNT_S3_ENDPOINT || env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || pick('endpoint_url') || `https://s3.${region}.amazonaws.com`;
  if (!/^https?:\/\//i.test(endpoint)) endpoint = `https://${endpoint}`;
  endpoint = endpoint.replace(/\/+$/, '');
  let credentials: Credentials | undefined;
  if (env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) {
    credentials = { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY, ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}) };
  } else {
    const id = pick('aws_access_key_id'), secret = pick('aws_secret_access_key'), token = pick('aws_session_token');
    if (id && secret) credentials = { accessKeyId: id, secretAccessKey: secret, ...(token ? { sessionToken: token } : {}) };
  }
  return { endpoint, region, ...(credentials ? { credentials } : {}) };
}
