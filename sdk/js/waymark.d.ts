// Types of the JavaScript helper (waymark.js). The world's own imports are
// declared in types/, generated from wit/journey.wit by `npm run types`.
/// <reference path="./types/journey.d.ts" />
import type { Timings, TlsInfo } from 'waymark:journey/http@0.2.0';

/** Wrap the journey's body (sync or async) as the world's `run` export. */
export function journey(body: () => void | Promise<void>): () => Promise<void>;
/** Run `body` as a named step; returns what `body` returns. */
export function step<T>(name: string, body: () => T): T;
/** Record a check; a failed check fails the run but does not stop it. */
export function check(name: string, passed: unknown, detail?: unknown): boolean;
/** A check that `actual === expected`, saying both when it fails. */
export function checkEq<T>(name: string, actual: T, expected: T): boolean;
/** Think time: pause the journey for `seconds` seconds (fractions allowed), as k6's `sleep`. */
export function sleep(seconds: number): void;

export const log: {
  debug(message: unknown): void;
  info(message: unknown): void;
  warn(message: unknown): void;
  error(message: unknown): void;
};

export const vars: {
  get(name: string): string | undefined;
  /** Throws when the variable is not set. */
  require(name: string): string;
  getOr(name: string, fallback: string): string;
};

/** Why a request produced no response: `kind` is the world's variant name. */
export class HttpError extends Error {
  kind:
    | 'denied'
    | 'invalid-request'
    | 'resolve'
    | 'connect'
    | 'tls'
    | 'timeout'
    | 'protocol'
    | 'malformed'
    | 'reset'
    | 'too-large'
    | 'limit';
  detail: string | bigint | undefined;
}

/** A complete response; the body has been read to the end. */
export class Response {
  status: number;
  headers: Array<[string, string]>;
  body: Uint8Array;
  wireBytes: number;
  /** Phase durations in microseconds. */
  timings: { [K in keyof Timings]: number };
  httpVersion: string;
  remoteAddr: string | undefined;
  reusedConnection: boolean;
  tls: TlsInfo | undefined;
  readonly ok: boolean;
  header(name: string): string | undefined;
  text(): string;
  json(): any;
}

export interface RequestOptions {
  headers?: Record<string, string> | Array<[string, string]>;
  bearer?: string;
  json?: unknown;
  form?: Record<string, string>;
  body?: string | Uint8Array;
  timeoutMs?: number;
  followRedirects?: boolean;
  trace?: boolean;
}

export function request(method: string, url: string, options?: RequestOptions): Response;

export const http: {
  request: typeof request;
  get(url: string, options?: RequestOptions): Response;
  post(url: string, options?: RequestOptions): Response;
  put(url: string, options?: RequestOptions): Response;
  patch(url: string, options?: RequestOptions): Response;
  delete(url: string, options?: RequestOptions): Response;
  head(url: string, options?: RequestOptions): Response;
  cookies(url: string): Array<[string, string]>;
  clearCookies(): void;
};
