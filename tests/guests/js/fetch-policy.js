// fetch() to `url`: the allow-list and the record apply to wasi:http too.
// Reports how the fetch ended as a check, so the test can see both sides.
import { journey, check, vars } from './waymark.js';

export const run = journey(async () => {
  try {
    const resp = await fetch(vars.require('url'));
    check('fetch answered', true, `status ${resp.status}`);
  } catch (e) {
    check('fetch answered', false, `${e.name}: ${e.message}`);
  }
});
