"""Write Waymark journeys in Python.

A thin layer over the ``waymark:journey`` world (wit/journey.wit) with the
shape of the Rust SDK: steps, checks, logs, variables and timed HTTP::

    from waymark import journey, step, check_eq, http, variables

    @journey
    def run():
        base = variables.require("base_url")
        with step("health"):
            check_eq("status is 200", http.get(f"{base}/health").status, 200)

Build it with componentize-py (``pip install componentize-py``)::

    componentize-py -d wit -w journey componentize app -o journey.wasm

and run it with ``waymark run journey.wasm``.
"""

import json as _json
import sys
from contextlib import contextmanager
from urllib.parse import quote_plus

from componentize_py_types import Err
from wit_world import WitWorld as _World
from wit_world.imports import http as _http
from wit_world.imports import report as _report
from wit_world.imports import vars as _vars

__all__ = [
    "journey",
    "step",
    "check",
    "check_eq",
    "sleep",
    "log",
    "variables",
    "MissingVariable",
    "http",
    "HttpError",
    "Response",
]


# Whether this instance's `random` was seeded: see `_fresh_instance`.
_seeded = False


def _fresh_instance():
    """Seed ``random`` anew from the host, once per instance. A component's
    memory starts as its build (or ``waymark load``'s snapshot of a journey
    from source) left it, so the state of ``random``, imported then, would
    otherwise be the same in every instance: every iteration would draw the
    same numbers."""
    global _seeded
    if not _seeded:
        _seeded = True
        rnd = sys.modules.get("random")
        if rnd is not None:
            rnd.seed()


def journey(body):
    """Make ``body`` the journey's ``run``: any exception it raises fails the
    run with its message. Defines ``WitWorld`` in the caller's module, which
    is what componentize-py exports."""

    class Journey(_World):
        def run(self) -> None:
            _fresh_instance()
            try:
                body()
            except Err:
                raise
            except Exception as e:  # every failure becomes the run's message
                raise Err(str(e) or type(e).__name__)

    module = sys.modules.get(body.__module__)
    if module is not None:
        module.WitWorld = Journey
    return body


@contextmanager
def step(name):
    """``with step("log in"):``: requests and checks inside belong to it."""
    _report.step_start(name)
    try:
        yield
    finally:
        _report.step_end()


def check(name, passed, detail=None):
    """Record a check; a failed check fails the run but does not stop it."""
    ok = bool(passed)
    _report.check(name, ok, None if detail is None else str(detail))
    return ok


def check_eq(name, actual, expected):
    """A check that ``actual == expected``, saying both when it fails."""
    ok = actual == expected
    _report.check(name, ok, None if ok else f"expected {expected!r}, got {actual!r}")
    return ok


def sleep(seconds):
    """Think time: pause the journey."""
    _report.sleep(max(0, min(0xFFFFFFFF, round(seconds * 1000))))


class log:
    """Log lines of the run."""

    @staticmethod
    def debug(message):
        _report.log(_report.Level.DEBUG, str(message))

    @staticmethod
    def info(message):
        _report.log(_report.Level.INFO, str(message))

    @staticmethod
    def warn(message):
        _report.log(_report.Level.WARN, str(message))

    @staticmethod
    def error(message):
        _report.log(_report.Level.ERROR, str(message))


class MissingVariable(LookupError):
    """A variable the journey requires was not given to the run."""

    def __init__(self, name):
        super().__init__(f"variable '{name}' is not set (give it with --var {name}=... or in vars)")
        self.name = name


class variables:
    """Variables and secrets given to the run. (Not ``vars``: that would
    shadow Python's builtin of the same name.)"""

    @staticmethod
    def get(name, default=None):
        value = _vars.get(name)
        return default if value is None else value

    @staticmethod
    def require(name):
        value = _vars.get(name)
        if value is None:
            raise MissingVariable(name)
        return value


class HttpError(Exception):
    """Why a request produced no response; ``kind`` is the world's variant
    name (denied, connect, timeout, ...)."""

    def __init__(self, kind, detail):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class Response:
    """A complete response; the body has been read to the end."""

    def __init__(self, r):
        self.status = r.status
        self.headers = r.headers
        self.body = r.body
        self.wire_bytes = r.wire_bytes
        self.timings = r.timings
        self.http_version = r.http_version
        self.remote_addr = r.remote_addr
        self.reused_connection = r.reused_connection
        self.tls = r.tls

    @property
    def ok(self):
        return 200 <= self.status < 300

    def header(self, name):
        """The first header of that name (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def text(self):
        return bytes(self.body).decode("utf-8", errors="replace")

    def json(self):
        try:
            return _json.loads(bytes(self.body))
        except ValueError as e:
            raise ValueError(f"response body is not the expected JSON: {e}") from None


def _kind(err):
    # HttpError_InvalidRequest -> invalid-request
    name = type(err).__name__.split("_", 1)[-1]
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


class http:
    """Timed HTTP through the run's sandbox (allow-list, limits, record)."""

    @staticmethod
    def request(
        method,
        url,
        *,
        headers=None,
        bearer=None,
        json=None,
        form=None,
        body=None,
        timeout=None,
        follow_redirects=None,
        trace=None,
    ):
        """Send a request and read the whole response. ``timeout`` is in
        seconds; ``headers`` a dict or (name, value) pairs."""
        pairs = list((headers or {}).items()) if isinstance(headers, dict) else list(headers or [])
        pairs = [(str(k), str(v)) for k, v in pairs]
        if json is not None:
            pairs.append(("content-type", "application/json"))
            body = _json.dumps(json)
        elif form is not None:
            pairs.append(("content-type", "application/x-www-form-urlencoded"))
            body = "&".join(f"{quote_plus(str(k))}={quote_plus(str(v))}" for k, v in form.items())
        if bearer is not None:
            pairs.append(("authorization", f"Bearer {bearer}"))
        if isinstance(body, str):
            body = body.encode()
        req = _http.Request(
            method=method,
            url=url,
            headers=pairs,
            body=body,
            timeout_ms=None if timeout is None else max(0, min(0xFFFFFFFF, round(timeout * 1000))),
            follow_redirects=follow_redirects,
            trace=trace,
        )
        try:
            return Response(_http.send(req))
        except Err as e:
            raise HttpError(_kind(e.value), getattr(e.value, "value", None)) from None

    @staticmethod
    def get(url, **kw):
        return http.request("GET", url, **kw)

    @staticmethod
    def post(url, **kw):
        return http.request("POST", url, **kw)

    @staticmethod
    def put(url, **kw):
        return http.request("PUT", url, **kw)

    @staticmethod
    def patch(url, **kw):
        return http.request("PATCH", url, **kw)

    @staticmethod
    def delete(url, **kw):
        return http.request("DELETE", url, **kw)

    @staticmethod
    def head(url, **kw):
        return http.request("HEAD", url, **kw)

    @staticmethod
    def cookies(url):
        """Cookies of the run's jar that a request to ``url`` would carry."""
        return _http.cookies(url)

    @staticmethod
    def clear_cookies():
        """Empty the run's cookie jar."""
        _http.clear_cookies()
