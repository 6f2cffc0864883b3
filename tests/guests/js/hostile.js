// A hostile JavaScript journey, by var `mode`: `spin` never returns,
// `oom` allocates until memory runs out. The runner must stop it, say why,
// and go on.
import { get } from 'waymark:journey/vars@0.2.0';

export function run() {
  const mode = get('mode');
  if (mode === 'spin') {
    let n = 0;
    for (;;) n++;
  } else if (mode === 'oom') {
    const hoard = [];
    for (;;) hoard.push(new Array(1 << 20).fill(hoard.length));
  }
  throw `unknown mode ${mode}`;
}
