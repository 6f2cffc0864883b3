"""A "market" journey modelled on an exchange app: list the active trading
pairs, then fetch prices for the first few, with checks on both.

vars: ``base_url``, optional ``pairs`` (how many prices to fetch, default 3).
"""

from waymark import check, check_eq, http, journey, log, step, variables


@journey
def run():
    base = variables.require("base_url")
    wanted = int(variables.get("pairs", "3"))

    with step("list pairs"):
        resp = http.get(f"{base}/pairs")
        check_eq("status is 200", resp.status, 200)
        active = [p["symbol"] for p in resp.json()["pairs"] if p["status"] == "active"]
        check("has active pairs", len(active) >= wanted, f"{len(active)} active")

    with step("prices"):
        for symbol in active[:wanted]:
            resp = http.get(f"{base}/prices/{symbol}")
            check_eq(f"{symbol} status is 200", resp.status, 200)
            price = resp.json()
            check_eq(f"{symbol} symbol echoed", price["symbol"], symbol)
            bid, ask = price["bid"], price["ask"]
            check(f"{symbol} bid <= ask", 0 < bid <= ask, f"bid {bid:.2f} ask {ask:.2f}")
            log.info(f"{symbol}: {bid:.2f} / {ask:.2f}")
