// A request to var `url`, once with fetch() (wasi:http) and once with the
// helper: the allow-list and the record apply to both. Each reports how it
// ended as a check, so the test sees the journey's side too.
import { journey, check, http, HttpError, vars } from './waymark.js';

export const run = journey(async () => {
  const url = vars.require('url');
  try {
    const resp = await fetch(url);
    check('fetch answered', true, `status ${resp.status}`);
  } catch (e) {
    check('fetch answered', false, `${e.name}: ${e.message}`);
  }
  try {
    const resp = http.get(url);
    check('helper answered', true, `status ${resp.status}`);
  } catch (e) {
    check('helper answered', false, e instanceof HttpError ? `HttpError ${e.kind}` : String(e));
  }
});
