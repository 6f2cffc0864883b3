declare module 'waymark:journey/report@0.2.0' {
  /**
   * Open a named step; requests and checks until `step-end` belong to it.
   */
  export function stepStart(name: string): void;
  /**
   * Close the innermost open step.
   */
  export function stepEnd(): void;
  /**
   * Record a check. A failed check makes the run fail, but does not stop it.
   */
  export function check(name: string, passed: boolean, detail: string | undefined): void;
  /**
   * A log line of the run.
   */
  export function log(level: Level, message: string): void;
  /**
   * Think time: pause the journey without holding a host thread.
   */
  export function sleep(ms: number): void;
  /**
   * Severity of a log line.
   * # Variants
   * 
   * ## `"debug"`
   * 
   * ## `"info"`
   * 
   * ## `"warn"`
   * 
   * ## `"error"`
   */
  export type Level = 'debug' | 'info' | 'warn' | 'error';
}
