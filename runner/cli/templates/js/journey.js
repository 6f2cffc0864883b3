// {{name}}: a Waymark journey. It checks the service's health, then logs in.
//
// vars: `base_url`, `user`; secrets: `password`.
import { journey, step, check, checkEq, http, vars } from './waymark.js';

export const run = journey(() => {
  const base = vars.require('base_url');

  step('health', () => {
    const resp = http.get(`${base}/health`);
    checkEq('status is 200', resp.status, 200);
  });

  step('log in', () => {
    const user = vars.getOr('user', 'qa');
    const password = vars.require('password');
    const resp = http.post(`${base}/login`, { json: { user, password } });
    checkEq('status is 200', resp.status, 200);
    check('token is not empty', Boolean(resp.json().token));
  });
});
