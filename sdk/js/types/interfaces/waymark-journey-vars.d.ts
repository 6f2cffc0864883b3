declare module 'waymark:journey/vars@0.2.0' {
  /**
   * The value of a variable or secret, if set.
   */
  export function get(name: string): string | undefined;
}
