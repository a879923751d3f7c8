# -*- test-case-name: tests.test_openfiles -*-
"""The open-file limit: room for every connection and file radx's limits allow, raised at start where it is short."""

from __future__ import annotations

import resource

__all__ = ["SPARE", "descriptors_needed", "raise_open_file_limit"]

# Descriptors besides connections and files being written: the listening
# sockets, the epoll and waker descriptors, logs, the interpreter's own.
SPARE = 64


def descriptors_needed(max_pending: int, max_conns: int, operations_window: int) -> int:
    """
    Connections without an association, associations, and for each of
    these a file per instance in flight (the window, and the one arriving),
    plus ``SPARE``.
    """
    return max_pending + max_conns * (1 + operations_window + 1) + SPARE


def raise_open_file_limit(needed: int) -> tuple[int, int]:
    """
    Raise the soft RLIMIT_NOFILE to ``needed`` if it is lower, as far as the
    hard limit allows; never lower it. Returns the soft limit before and after.

    Past the limit the kernel refuses accept(2) with EMFILE, before radx sees
    the connection: then neither --max-pending's closing of the oldest pending
    connection nor an A-ASSOCIATE-RJ can happen.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft, soft
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return soft, max(soft, wanted)
