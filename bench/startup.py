"""What a radx command's start-up is made of: the interpreter, Twisted, radx.

    python bench/startup.py [--runs 15]

Runs, interleaved, ``--runs`` times each, and prints the median wall
clock and CPU time of each:

- ``python -S -c pass``: the interpreter alone;
- ``python -c pass``: with ``site`` (and whatever ``.pth`` files the
  machine has);
- Twisted's reactor, endpoints and logger imported as a radx command
  imports them (pyOpenSSL kept out, the collector off, the modules of
  ``radx.app.lean.UNUSED_MODULES`` deferred): the floor;
- ``python -m radx dicom echo 127.0.0.1 1``: a whole radx command, to a
  port where nothing listens, so it ends at its first connection attempt.

Then, in one process where those Twisted modules are already loaded, how
long radx's own modules take to import, and how much of that is
making their dataclasses (``dataclasses._process_class``, timed).

The difference between the last two rows understates radx's part: the
Twisted row ends with the interpreter's final collection over every
object its imports made, which a radx command, having frozen them
(radx.app.lean), skips. The last line measures radx's imports directly.
See bench/README.rst, "Start-up".
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

_TWISTED = (
    "import gc, sys; gc.disable(); sys.modules['OpenSSL'] = None; "
    "from radx.app.lean import defer_unused_imports; defer_unused_imports(); "
    "from twisted.internet import reactor, endpoints; import twisted.logger"
)

_CASES = {
    "python -S -c pass": [sys.executable, "-S", "-c", "pass"],
    "python -c pass": [sys.executable, "-c", "pass"],
    "+ Twisted (reactor, endpoints, logger)": [sys.executable, "-c", _TWISTED],
    "radx dicom echo, nothing listening": [sys.executable, "-m", "radx", "dicom", "echo", "127.0.0.1", "1"],
}

# In a process that already holds Twisted: radx's modules, and their dataclasses.
_RADX_IMPORTS = """if True:
    import dataclasses, gc, sys, time
    gc.disable()
    sys.modules["OpenSSL"] = None
    from radx.app.lean import defer_unused_imports
    defer_unused_imports()
    import twisted.internet.reactor, twisted.internet.endpoints, twisted.logger, twisted.python.usage
    made = [0, 0.0]
    process_class = dataclasses._process_class
    def timed(*arguments, **keywords):
        started = time.perf_counter()
        try:
            return process_class(*arguments, **keywords)
        finally:
            made[0] += 1
            made[1] += time.perf_counter() - started
    dataclasses._process_class = timed
    started = time.perf_counter()
    import radx.app.cli, radx.app.scu_cli, radx.scu.store, radx.scu.echo, radx.scu.sources
    print(time.perf_counter() - started, made[0], made[1])
"""


def _run(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="runs of each, interleaved (default 15)")
    args = parser.parse_args(argv)

    # Byte-compiled, as an installed package is (see senders.py).
    import radx

    subprocess.run([sys.executable, "-m", "compileall", "-q", radx.__path__[0]], check=True)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in _CASES}
    imports = []
    for _ in range(args.runs):
        for name, command in _CASES.items():
            times[name].append(_run(command))
        done = subprocess.run([sys.executable, "-c", _RADX_IMPORTS], capture_output=True, text=True, check=True)
        seconds, count, making = done.stdout.split()
        imports.append((float(seconds), int(count), float(making)))

    print(f"Medians of {args.runs} interleaved runs, ms:")
    print(f"{'':42s} {'wall':>6s} {'CPU':>6s}")
    for name, runs in times.items():
        wall = statistics.median(w for w, _ in runs) * 1000
        cpu = statistics.median(c for _, c in runs) * 1000
        print(f"{name:42s} {wall:6.0f} {cpu:6.0f}")
    seconds = statistics.median(s for s, _, _ in imports) * 1000
    making = statistics.median(m for _, _, m in imports) * 1000
    print(
        f"\nradx's own modules, imported after Twisted's: {seconds:.1f} ms,"
        f" of which {making:.1f} ms making its {imports[0][1]} dataclasses."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
