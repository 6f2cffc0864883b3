"""A request to var ``url`` with the helper; how it ended is a check, so
the test sees the journey's side of the allow-list too."""

from waymark import HttpError, check, http, journey, variables


@journey
def run():
    try:
        resp = http.get(variables.require("url"))
        check("helper answered", True, f"status {resp.status}")
    except HttpError as e:
        check("helper answered", False, f"HttpError {e.kind}")
