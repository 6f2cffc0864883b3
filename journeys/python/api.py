"""A multi-step API journey: log in, take the token from the JSON answer,
call an authenticated endpoint with it and check the fields.

vars: ``base_url``, ``user``; secrets: ``password``.
"""

from waymark import check, check_eq, http, journey, step, variables


@journey
def run():
    base = variables.require("base_url")
    user = variables.get("user", "qa")
    password = variables.require("password")

    with step("log in"):
        resp = http.post(f"{base}/login", json={"user": user, "password": password})
        check_eq("status is 200", resp.status, 200)
        token = resp.json()["token"]
        check("token is not empty", isinstance(token, str) and token != "")

    with step("profile"):
        resp = http.get(f"{base}/me", bearer=token)
        check_eq("status is 200", resp.status, 200)
        me = resp.json()
        check_eq("user matches", me["user"], user)
        check("plan is set", bool(me.get("plan")))

    with step("rejects a bad token"):
        resp = http.get(f"{base}/me", bearer="not-a-token")
        check_eq("status is 401", resp.status, 401)
