"""What a hook's child process costs: N runs of a program through reactor.spawnProcess, as radx's hooks start them.

    .venv/bin/python bench/spawn.py [N] [CONCURRENCY] [PROGRAM]

Prints the runs a second and the reactor thread's CPU time per run (the
time the server's one thread spends starting and reaping a child, which
it cannot spend receiving).
"""

from __future__ import annotations

import os
import sys
import time

from twisted.internet import reactor
from twisted.internet.protocol import ProcessProtocol


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    program = sys.argv[3] if len(sys.argv) > 3 else "/bin/true"
    started = ended = 0
    clock = {}

    class Child(ProcessProtocol):
        def connectionMade(self):
            self.transport.closeStdin()

        def processEnded(self, reason):
            nonlocal ended
            ended += 1
            if ended == total:
                clock["wall"] = time.perf_counter() - clock["start"]
                clock["cpu"] = time.thread_time() - clock["cpu_start"]
                reactor.stop()
            else:
                spawn()

    def spawn():
        nonlocal started
        if started < total:
            started += 1
            reactor.spawnProcess(Child(), program, [program], env=dict(os.environ, RADX_HOOK_ID="0" * 32, RADX_HOOK="store"))

    def begin():
        clock["start"] = time.perf_counter()
        clock["cpu_start"] = time.thread_time()
        for _ in range(concurrency):
            spawn()

    reactor.callWhenRunning(begin)
    reactor.run()
    print(
        f"{total} runs of {program}, {concurrency} at once: {total / clock['wall']:.0f} runs/s,"
        f" reactor thread {clock['cpu'] / total * 1000:.2f} ms CPU a run, wall {clock['wall']:.2f} s"
    )


if __name__ == "__main__":
    main()
