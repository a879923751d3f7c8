# -*- test-case-name: tests.test_app_workers -*-
"""``python -m radx.app.worker``: a worker process of ``radx dicom scp --workers N``, as its supervisor starts it.

Its settings come in the environment (L{SETTINGS}, JSON): the server's
configuration as the supervisor parsed it, its index, the listening
sockets it finds on its descriptors, the shared association table. It does not outlive the
supervisor: the kernel sends it SIGTERM when the supervisor ends
(PR_SET_PDEATHSIG), and the end of the supervisor's pipe stops it too.
Start-up is as lean as the command's (radx.app.startup).
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import sys

SETTINGS = "RADX_WORKER"
# prctl(2): the signal this process gets when its parent ends.
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """SIGTERM when the supervisor ends; at once if it has ended already."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        # It ended before the request above: nobody would send the signal.
        sys.exit(1)


def main() -> int:
    # A Ctrl+C reaches the supervisor too, which says when to stop; once
    # the reactor runs, radx.app.signals takes SIGINT over.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = json.loads(os.environ.pop(SETTINGS))
    die_with_parent(settings["parent"])
    from radx.app.startup import defer_unused_imports, pause_collector, without_tls

    pause_collector()
    defer_unused_imports()
    # The supervisor's own radx.app.config.ScpConfig, as it parsed it; loading it loads no Twisted.
    config = pickle.loads(base64.b64decode(settings["config"]))
    if config.tls is None:
        without_tls()
    from radx.app.heap import keep_large_buffers_in_heap

    keep_large_buffers_in_heap()
    from radx.app.workerservice import run_worker

    return run_worker(config, settings)


if __name__ == "__main__":
    sys.exit(main())
