"""No request, no step: what instantiating and running a Python journey
costs by itself (bench/languages)."""

from waymark import journey


@journey
def run():
    pass
