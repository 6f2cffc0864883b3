// A multi-step API journey: log in, take the token from the JSON answer,
// call an authenticated endpoint with it and check the fields.
//
// vars: `base_url`, `user`; secrets: `password`.
import { journey, step, check, checkEq, http, vars } from './waymark.js';

export const run = journey(() => {
  const base = vars.require('base_url');
  const user = vars.getOr('user', 'qa');
  const password = vars.require('password');

  const token = step('log in', () => {
    const resp = http.post(`${base}/login`, { json: { user, password } });
    checkEq('status is 200', resp.status, 200);
    const { token } = resp.json();
    check('token is not empty', typeof token === 'string' && token.length > 0);
    return token;
  });

  step('profile', () => {
    const resp = http.get(`${base}/me`, { bearer: token });
    checkEq('status is 200', resp.status, 200);
    const me = resp.json();
    checkEq('user matches', me.user, user);
    check('plan is set', Boolean(me.plan));
  });

  step('rejects a bad token', () => {
    const resp = http.get(`${base}/me`, { bearer: 'not-a-token' });
    checkEq('status is 401', resp.status, 401);
  });
});
