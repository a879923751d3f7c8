# -*- test-case-name: tests.test_heap -*-
"""Large buffers from the C heap, not from a mapping of their own each (glibc's malloc)."""

from __future__ import annotations

import ctypes

__all__ = ["keep_large_buffers_in_heap", "release_free_memory"]

# mallopt(3) parameters, from glibc's <malloc.h>.
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

# Requests from this size up get a mapping of their own: glibc's ceiling
# for its own sliding threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_THRESHOLD = 32 * 1024 * 1024
# Room kept free at the top of the heap when it grows or shrinks.
TOP_PAD = 4 * 1024 * 1024


def keep_large_buffers_in_heap() -> bool:
    """
    Have glibc's malloc serve the buffers radx streams through from its
    heap, where freed memory is reused, not mapped afresh.

    Each read of the receiver (up to 256 KiB) and each stretch the sender
    reads from a file and frames (128 KiB and more) is a new bytes object
    over glibc's default mmap threshold of 128 KiB, so each got its own
    mmap(2): every page of it faulted in as the kernel copied into it, and
    was unmapped at free. glibc raises that threshold to the size of a
    mapped block when it is freed, but a read's buffer is shrunk to what
    arrived before it is freed, so the threshold stayed under the next
    request: about 45 page faults per CT image received, 64 per one sent,
    and a tenth or more of the receiver's CPU per CT image. With the
    threshold fixed at 32 MiB, and 4 MiB kept free at the top of the heap
    as it grows and shrinks, those buffers reuse memory already mapped.

    Returns whether it took effect: False where the C library has no
    ``mallopt`` (not glibc), which leaves the allocator as it was.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TOP_PAD, TOP_PAD))


def release_free_memory() -> bool:
    """
    Give the free memory in the middle of the heap back to the system
    (glibc's ``malloc_trim``), keeping ``TOP_PAD`` at its top.

    With large buffers served from the heap, the buffers of many
    connections freed together leave holes below memory still in use, and
    free() only ever returns the top of the heap: 1,000 connections that
    each buffered part of a 128 KiB request left 32 MiB resident after they
    had all closed. ``malloc_trim`` returns the pages of every free chunk.

    Returns whether it ran: False where the C library has no ``malloc_trim``.
    """
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes = (ctypes.c_size_t,)
    malloc_trim.restype = ctypes.c_int
    malloc_trim(TOP_PAD)
    return True
