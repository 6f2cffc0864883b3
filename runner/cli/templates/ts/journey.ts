// {{name}}: a Waymark journey in TypeScript. It checks the service's health, then logs in.
//
// vars: `base_url`, `user`; secrets: `password`.
import { step, check, checkEq, http, vars } from 'waymark';

export default function run(): void {
  const base: string = vars.require('base_url');

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
}
