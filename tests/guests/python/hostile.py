"""A hostile Python journey, by var ``mode``: ``spin`` never returns,
``oom`` allocates until memory runs out. The runner must stop it, say why,
and go on."""

from waymark import journey, variables


@journey
def run():
    mode = variables.get("mode")
    if mode == "spin":
        n = 0
        while True:
            n += 1
    elif mode == "oom":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))
    raise ValueError(f"unknown mode {mode}")
