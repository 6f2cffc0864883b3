"""{{name}}: a Waymark journey. It checks the service's health, then logs in.

vars: ``base_url``, ``user``; secrets: ``password``.
"""

from waymark import check, check_eq, http, journey, step, variables


@journey
def run():
    base = variables.require("base_url")

    with step("health"):
        resp = http.get(f"{base}/health")
        check_eq("status is 200", resp.status, 200)

    with step("log in"):
        user = variables.get("user", "qa")
        resp = http.post(f"{base}/login", json={"user": user, "password": variables.require("password")})
        check_eq("status is 200", resp.status, 200)
        check("token is not empty", bool(resp.json().get("token")))
