/// <reference path="./interfaces/waymark-journey-http.d.ts" />
/// <reference path="./interfaces/waymark-journey-report.d.ts" />
/// <reference path="./interfaces/waymark-journey-vars.d.ts" />
declare module 'waymark:journey/journey@0.2.0' {
  export type * as WaymarkJourneyHttp020 from 'waymark:journey/http@0.2.0'; // import waymark:journey/http@0.2.0
  export type * as WaymarkJourneyReport020 from 'waymark:journey/report@0.2.0'; // import waymark:journey/report@0.2.0
  export type * as WaymarkJourneyVars020 from 'waymark:journey/vars@0.2.0'; // import waymark:journey/vars@0.2.0
  /**
  * Run the journey once. `err` makes the run fail with that message.
  */
  export function run(): void;
  export type Result<T, E> = { tag: 'ok', val: T } | { tag: 'err', val: E };
}
