declare module 'waymark:journey/http@0.2.0' {
  /**
   * Send a request and read the whole response.
   */
  export function send(req: Request): Response;
  /**
   * The cookies of the run's jar that a request to `url` would carry.
   */
  export function cookies(url: string): Array<[string, string]>;
  /**
   * Empty the run's cookie jar.
   */
  export function clearCookies(): void;
  /**
   * An outgoing request.
   */
  export interface Request {
    /**
     * `GET`, `POST`, ... (case-insensitive).
     */
    method: string,
    /**
     * Absolute `http://` or `https://` URL.
     */
    url: string,
    /**
     * Extra request headers, in order.
     */
    headers: Array<[string, string]>,
    /**
     * Request body, if any.
     */
    body?: Uint8Array,
    /**
     * Per-request timeout in milliseconds; the run's own timeout still applies.
     */
    timeoutMs?: number,
    /**
     * Follow redirects (default: yes, at most 10 hops); each hop is its own
     * request in the record and is checked against the allow-list.
     */
    followRedirects?: boolean,
    /**
     * Send a W3C `traceparent` header (default: yes; one trace per run).
     */
    trace?: boolean,
  }
  /**
   * Phase durations of one request, in microseconds.
   * 
   * resolve: start -> address resolved; connect: -> TCP established;
   * tls: -> handshake done (0 for http); processing: connection ready ->
   * first response byte; transfer: first -> last body byte; total: start ->
   * last body byte. A reused connection reports 0 for resolve, connect, tls.
   */
  export interface Timings {
    resolveUs: bigint,
    connectUs: bigint,
    tlsUs: bigint,
    processingUs: bigint,
    transferUs: bigint,
    totalUs: bigint,
  }
  /**
   * The negotiated TLS session.
   */
  export interface TlsInfo {
    /**
     * e.g. `TLSv1.3`.
     */
    version: string,
    /**
     * e.g. `TLS13_AES_256_GCM_SHA384`.
     */
    cipher: string,
    /**
     * The leaf certificate's notAfter, in seconds since the Unix epoch.
     */
    peerCertNotAfter?: bigint,
  }
  /**
   * A complete response (the body is read to the end).
   */
  export interface Response {
    status: number,
    headers: Array<[string, string]>,
    /**
     * The body, decoded when the host asked for compression (gzip,
     * deflate, br) itself.
     */
    body: Uint8Array,
    /**
     * Body bytes as they came over the wire (before decoding).
     */
    wireBytes: bigint,
    timings: Timings,
    /**
     * e.g. `HTTP/1.1`.
     */
    httpVersion: string,
    /**
     * The peer's `ip:port`.
     */
    remoteAddr?: string,
    /**
     * True when a kept-alive connection of this run was used.
     */
    reusedConnection: boolean,
    /**
     * Present for https.
     */
    tls?: TlsInfo,
  }
  /**
   * Why a request did not produce a response.
   */
  export type HttpError = HttpErrorDenied | HttpErrorInvalidRequest | HttpErrorResolve | HttpErrorConnect | HttpErrorTls | HttpErrorTimeout | HttpErrorProtocol | HttpErrorMalformed | HttpErrorReset | HttpErrorTooLarge | HttpErrorLimit;
  /**
   * The host (named) is not allowed by the run's allow-list.
   */
  export interface HttpErrorDenied {
    tag: 'denied',
    val: string,
  }
  /**
   * The request itself is malformed (bad URL, method or header).
   */
  export interface HttpErrorInvalidRequest {
    tag: 'invalid-request',
    val: string,
  }
  /**
   * The name could not be resolved.
   */
  export interface HttpErrorResolve {
    tag: 'resolve',
    val: string,
  }
  /**
   * The TCP connection could not be established.
   */
  export interface HttpErrorConnect {
    tag: 'connect',
    val: string,
  }
  /**
   * The TLS handshake failed.
   */
  export interface HttpErrorTls {
    tag: 'tls',
    val: string,
  }
  /**
   * A timeout expired; the string names the limit.
   */
  export interface HttpErrorTimeout {
    tag: 'timeout',
    val: string,
  }
  /**
   * The peer broke the HTTP protocol (e.g. sent more body than its
   * Content-Length).
   */
  export interface HttpErrorProtocol {
    tag: 'protocol',
    val: string,
  }
  /**
   * The response could not be parsed (e.g. a malformed status line).
   */
  export interface HttpErrorMalformed {
    tag: 'malformed',
    val: string,
  }
  /**
   * The connection was reset or closed before the response was complete.
   */
  export interface HttpErrorReset {
    tag: 'reset',
    val: string,
  }
  /**
   * The response body exceeded the cap (bytes).
   */
  export interface HttpErrorTooLarge {
    tag: 'too-large',
    val: bigint,
  }
  /**
   * A per-run limit was hit; the string names it (request count, total
   * bytes, header size, redirects).
   */
  export interface HttpErrorLimit {
    tag: 'limit',
    val: string,
  }
}
