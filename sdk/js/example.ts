// The api journey in TypeScript: `npm run check` type-checks it against
// waymark.d.ts and the world's generated types (types/), as CI does. To build
// a TypeScript journey, compile it to JavaScript (tsc) and build that.
import { journey, step, check, checkEq, http, vars, HttpError, log } from './waymark.js';

interface Profile {
  user: string;
  plan: string;
}

export const run = journey(() => {
  const base: string = vars.require('base_url');
  const user = vars.getOr('user', 'qa');

  const token: string = step('log in', () => {
    const resp = http.post(`${base}/login`, { json: { user, password: vars.require('password') } });
    checkEq('status is 200', resp.status, 200);
    const { token } = resp.json() as { token: string };
    check('token is not empty', token.length > 0);
    return token;
  });

  step('profile', () => {
    const resp = http.get(`${base}/me`, { bearer: token, timeoutMs: 5000 });
    checkEq('status is 200', resp.status, 200);
    const me = resp.json() as Profile;
    checkEq('user matches', me.user, user);
    log.info(`${resp.httpVersion} in ${resp.timings.totalUs} µs, tls: ${resp.tls?.version ?? 'none'}`);
  });

  try {
    http.get('https://elsewhere.example/');
  } catch (e) {
    if (e instanceof HttpError && e.kind === 'denied') log.warn(e.message);
  }
});
