"""Run `radx dicom scp` under cProfile, every thread included.

    python bench/profiled_radx.py OUT.prof dicom scp PORT [flags]

``python -m cProfile`` sees only the main thread, the reactor; radx's file
system work (writes, fsync, the header read, the rename) runs on a
threadpool.  This wrapper gives each thread its own profiler, by wrapping
``threading.Thread.run`` before radx starts, and writes two files when the
server stops (SIGINT; radx exits 0):

    OUT.prof           the main thread: the reactor and everything on it
    OUT-threads.prof   all other threads together: the threadpool

It changes nothing in radx; it only instruments the interpreter around it.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading


def main() -> int:
    out = sys.argv[1]
    arguments = sys.argv[2:]
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original_run = threading.Thread.run

    def run(self):
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        profile.enable()
        try:
            original_run(self)
        finally:
            profile.disable()

    threading.Thread.run = run

    # Imports and the reactor's installation are start-up, not the work measured.
    from twisted.internet import reactor  # noqa: F401

    from radx.app import cli

    sys.argv = ["radx", *arguments]
    main_profile = cProfile.Profile()
    main_profile.enable()
    try:
        code = cli.main(arguments)
    finally:
        main_profile.disable()
        main_profile.dump_stats(out)
        with lock:
            finished = list(profiles)
        stats = None
        for profile in finished:
            # A thread still running (a daemon) is read as it is.
            try:
                profile.create_stats()
            except Exception:
                continue
            if not profile.stats:
                continue
            if stats is None:
                stats = pstats.Stats(profile)
            else:
                stats.add(profile)
        threads_out = out[: -len(".prof")] if out.endswith(".prof") else out
        threads_out += "-threads.prof"
        if stats is not None:
            stats.dump_stats(threads_out)
    return code


if __name__ == "__main__":
    sys.exit(main())
