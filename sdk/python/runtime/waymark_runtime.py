"""The Python runtime carried in the waymark binary: one component (CPython,
the standard library and the SDK) that runs any journey from its source.

The host calls ``prepare`` once per source file when it loads a journey (a
syntax check, the code compiled, and the modules it imports), then every run calls ``run``,
which executes the modules the host hands over through
``waymark:journey/script``. Built by ``runner/engine/build.rs`` with
componentize-py against the ``script-runtime`` world of ``wit/``.
"""

import importlib.abc
import marshal
import importlib.util
import sys
import traceback

# Modules a journey is likely to import, imported now so that they are part
# of the image componentize-py snapshots instead of being loaded each run.
import base64  # noqa: F401
import datetime  # noqa: F401
import hashlib  # noqa: F401
import json  # noqa: F401
import math  # noqa: F401
import random  # noqa: F401
import re  # noqa: F401
import time  # noqa: F401
import urllib.parse  # noqa: F401
import uuid  # noqa: F401

import waymark  # the SDK (`from waymark import …`); run() calls it too
from componentize_py_types import Err
from wit_world import WitWorld as _World
from wit_world.imports import script as _script


def _module_name(path):
    """``lib/auth.py`` → ``lib.auth``; ``lib/__init__.py`` → ``lib``."""
    parts = path[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the journey's own modules from the text the host handed over."""

    def __init__(self, modules):
        self.by_name = {_module_name(m.path): m for m in modules}
        # Directories without an __init__.py are packages all the same, as
        # namespace packages are on a file system.
        self.packages = {
            ".".join(name.split(".")[:i]) for name in self.by_name for i in range(1, name.count(".") + 1)
        }

    def find_spec(self, fullname, path=None, target=None):
        m = self.by_name.get(fullname)
        if m is None:
            if fullname in self.packages:
                return importlib.util.spec_from_loader(fullname, self, is_package=True)
            return None
        package = m.path.endswith("/__init__.py") or m.path == "__init__.py"
        return importlib.util.spec_from_loader(fullname, self, origin=m.path, is_package=package)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        m = self.by_name.get(module.__name__)
        if m is None or m.path.endswith("__init__.py"):
            module.__path__ = []
        if m is None:
            return
        module.__file__ = m.path
        exec(_code(m), module.__dict__)


def _code(m):
    """The module's code object: the one ``prepare`` compiled, else compiled
    now. Compiling is most of what evaluating a journey costs a fresh
    instance, and ``prepare`` runs once per file where ``run`` runs per
    iteration."""
    if m.compiled:
        return marshal.loads(m.compiled)
    return compile(m.code, m.path, "exec")


def _located(e, files):
    """``lib/auth.py:7:5: ValueError: boom``: the innermost frame of the
    traceback that is one of the journey's files."""
    what = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        if frame.filename in files:
            col = getattr(frame, "colno", None)
            at = f"{frame.filename}:{frame.lineno}" + (f":{col + 1}" if col is not None else "")
            return f"{at}: {what}"
    return what


# The journey as the first run of this instance evaluated it: a kept
# instance (`waymark load --reuse-instance`) evaluates its modules once and
# calls the journey again, as a component's instance would.
_evaluated = None


def _evaluate():
    """The journey's modules executed: its body and the paths of its files."""
    modules = _script.modules()
    files = {m.path for m in modules}
    # Left in place: a kept instance's later runs import from it too.
    sys.meta_path.insert(0, _Finder(modules))
    try:
        entry = modules[0]
        namespace = {"__name__": "__journey__", "__file__": entry.path}
        exec(_code(entry), namespace)
        body = namespace.get("run")
    except BaseException as e:  # placed in the journey's files
        raise Err(_located(e, files))
    if not callable(body):
        raise Err(f"{entry.path} defines no journey: define a function `run` (decorated @journey or not)")
    return (body, files)


class WitWorld(_World):
    def prepare(self, path: str, source: str) -> _script.Prepared:
        import ast  # only here: out of the image every run's instance starts from

        try:
            tree = ast.parse(source, filename=path)
            # The compiler finds errors the parser does not (`return` outside
            # a function, a misplaced `nonlocal`): they are reported here too.
            compiled = marshal.dumps(compile(tree, path, "exec"))
        except SyntaxError as e:
            raise Err(f"{path}:{e.lineno}:{e.offset}: {e.msg}")
        imports = []
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from lib import auth` may name a module `lib.auth`.
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                if n not in imports:
                    imports.append(n)
        return _script.Prepared(code=source, imports=imports, source_map="", compiled=compiled)

    def init(self) -> None:
        global _evaluated
        if _evaluated is None:
            _evaluated = _evaluate()

    def run(self) -> None:
        global _evaluated
        waymark._fresh_instance()
        if _evaluated is None:
            _evaluated = _evaluate()
        body, files = _evaluated
        try:
            body()
        except Err:
            raise
        except BaseException as e:  # every failure becomes the run's message, placed
            raise Err(_located(e, files))
