# -*- test-case-name: tests.test_app_config,tests.test_scu_cli -*-
"""
What the requestor asks of an association: RequestorConfig, the twin of
the acceptor's AcceptorPolicy, each default written once, on its field.

Nothing here loads Twisted, so `radx dicom echo` and `radx dicom store`
read their defaults before they choose whether the reactor gets TLS.
"""

from __future__ import annotations

from dataclasses import dataclass

from radx.ul.negotiation import DEFAULT_AE_TITLE
from radx.ul.pdu import DEFAULT_MAXIMUM_LENGTH

# Seconds to wait for the connection, the association, each response.
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class RequestorConfig:
    """The AE titles an A-ASSOCIATE-RQ carries, the Maximum Length this side receives (PS3.8 D.1), how long it waits."""

    # The peer's: radx's own SCP's, unless told another.
    called_ae_title: str = DEFAULT_AE_TITLE
    calling_ae_title: str = "RADX-SCU"
    maximum_length: int = DEFAULT_MAXIMUM_LENGTH
    timeout: float = DEFAULT_TIMEOUT
