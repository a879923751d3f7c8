# -*- test-case-name: tests.test_scu_association -*-
"""C-ECHO SCU: one association, N echoes, each timed."""

from __future__ import annotations

import time
from dataclasses import dataclass

from twisted.internet import defer

from radx import uids
from radx.scu.association import DEFAULT_TIMEOUT, AssociationAborted, associate, associate_request
from radx.ul.pdu import DEFAULT_MAXIMUM_LENGTH


@dataclass(frozen=True)
class EchoResult:
    """One C-ECHO: its status and round-trip time."""

    status: int
    seconds: float


@defer.inlineCallbacks
def echo(
    endpoint,
    reactor,
    called_ae_title: str,
    calling_ae_title: str,
    count: int = 1,
    timeout: float = DEFAULT_TIMEOUT,
    maximum_length: int = DEFAULT_MAXIMUM_LENGTH,
    on_result=None,
    clock=time.perf_counter,
):
    """
    Associate, send ``count`` C-ECHO-RQ one after the other, release.

    Fires with the list of L{EchoResult}; ``on_result`` is called with each
    as it comes. Fails with an AssociationError when the association is
    rejected, aborted or times out.
    """
    # PS3.4 A.4: the Verification SOP Class, in the default transfer syntax (PS3.5 10.1).
    request = associate_request(
        called_ae_title,
        calling_ae_title,
        {(uids.VERIFICATION_SOP_CLASS, uids.IMPLICIT_VR_LITTLE_ENDIAN): 1},
        maximum_length,
    )
    association = yield associate(endpoint, request, reactor, timeout)
    results = []
    try:
        for _ in range(count):
            started = clock()
            response = yield association.echo()
            result = EchoResult(response.status, clock() - started)
            results.append(result)
            if on_result is not None:
                on_result(result)
    except AssociationAborted:
        raise
    except BaseException:
        # Associated but unable to echo (no Verification context): end politely.
        yield association.release()
        raise
    yield association.release()
    return results
