// No request, no step: what instantiating and running a JavaScript journey
// costs by itself; with var `ms` it sleeps that long, to count the memory of
// instances alive at once (benches/languages.rs).
import { sleep } from 'waymark:journey/report@0.2.0';
import { get } from 'waymark:journey/vars@0.2.0';

export function run() {
  const ms = get('ms');
  if (ms !== undefined) sleep(Number(ms));
}
