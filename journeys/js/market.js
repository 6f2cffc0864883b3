// A "market" journey modelled on an exchange app: list the active trading
// pairs, then fetch prices for the first few, with checks on both.
//
// vars: `base_url`, optional `pairs` (how many prices to fetch, default 3).
import { journey, step, check, checkEq, http, log, vars } from './waymark.js';

export const run = journey(() => {
  const base = vars.require('base_url');
  const wanted = Number.parseInt(vars.getOr('pairs', '3'), 10);
  if (!Number.isInteger(wanted) || wanted < 0) throw new Error("variable 'pairs' is not a count");

  const active = step('list pairs', () => {
    const resp = http.get(`${base}/pairs`);
    checkEq('status is 200', resp.status, 200);
    const active = resp
      .json()
      .pairs.filter((p) => p.status === 'active')
      .map((p) => p.symbol);
    check('has active pairs', active.length >= wanted, `${active.length} active`);
    return active;
  });

  step('prices', () => {
    for (const symbol of active.slice(0, wanted)) {
      const resp = http.get(`${base}/prices/${symbol}`);
      checkEq(`${symbol} status is 200`, resp.status, 200);
      const price = resp.json();
      checkEq(`${symbol} symbol echoed`, price.symbol, symbol);
      check(
        `${symbol} bid <= ask`,
        price.bid > 0 && price.bid <= price.ask,
        `bid ${price.bid.toFixed(2)} ask ${price.ask.toFixed(2)}`,
      );
      log.info(`${symbol}: ${price.bid.toFixed(2)} / ${price.ask.toFixed(2)}`);
    }
  });
});
