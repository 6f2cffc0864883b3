// The api journey with JavaScript's own `fetch()` and no Waymark HTTP
// helper: fetch goes out through wasi:http, which Waymark routes through
// the same timed client, allow-list and record as SDK requests.
//
// vars: `base_url`, `user`; secrets: `password`.
import { journey, step, check, checkEq, vars } from './waymark.js';

export const run = journey(async () => {
  const base = vars.require('base_url');
  const user = vars.getOr('user', 'qa');
  const password = vars.require('password');

  const token = await step('log in', async () => {
    const resp = await fetch(`${base}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user, password }),
    });
    checkEq('status is 200', resp.status, 200);
    const { token } = await resp.json();
    check('token is not empty', typeof token === 'string' && token.length > 0);
    return token;
  });

  await step('profile', async () => {
    const resp = await fetch(`${base}/me`, { headers: { authorization: `Bearer ${token}` } });
    checkEq('status is 200', resp.status, 200);
    const me = await resp.json();
    checkEq('user matches', me.user, user);
    check('plan is set', Boolean(me.plan));
  });

  await step('rejects a bad token', async () => {
    const resp = await fetch(`${base}/me`, { headers: { authorization: 'Bearer not-a-token' } });
    checkEq('status is 401', resp.status, 401);
  });
});
