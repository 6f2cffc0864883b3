"""No request, no step: what instantiating and running a Python journey
costs by itself; with var ``ms`` it sleeps that long, to count the memory of
instances alive at once (benches/languages.rs)."""

from waymark import journey, sleep, variables


@journey
def run():
    ms = variables.get("ms")
    if ms is not None:
        sleep(int(ms) / 1000)
