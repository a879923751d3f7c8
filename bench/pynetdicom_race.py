"""
pynetdicom 3.0 as a client, many associations of C-ECHOs against one
server: how many responses it misses, and whether each miss is a
response its own association thread took (docs/testing.rst, "Notes on
peers").

    python bench/pynetdicom_race.py PORT [--associations 200] [--echoes 10]
    python bench/pynetdicom_race.py PORT --widen        # the race made certain
    python bench/pynetdicom_race.py PORT --widen --keep # with tests.interop.keep_responses

PORT is any Verification SCP on 127.0.0.1 with AE title RADX-SCP: radx
(``radx dicom scp 0 --bind 127.0.0.1`` prints its port) or, as a
control, DCMTK's ``TCP_NODELAY=1 storescp -aet RADX-SCP PORT``.
``--widen`` holds the association thread 5 ms where the race needs it to
be: just past its pause check. A miss waits out a 2 s DIMSE timeout.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from pynetdicom import AE, association

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tests.interop import keep_responses  # noqa: E402

VERIFICATION = "1.2.840.10008.1.1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("--associations", type=int, default=200)
    parser.add_argument("--echoes", type=int, default=10)
    parser.add_argument("--widen", action="store_true", help="hold the association thread just past its pause check")
    parser.add_argument("--keep", action="store_true", help="hand a taken response back (tests.interop.keep_responses)")
    options = parser.parse_args()

    # Every response the association thread takes: pynetdicom drops it
    # with "Received unexpected C-ECHO service message".
    taken = []
    serve = association.Association._serve_request

    def counting_serve(self, message, context_id):
        if not message.is_valid_request:
            taken.append(message.MessageIDBeingRespondedTo)
        return serve(self, message, context_id)

    association.Association._serve_request = counting_serve

    if options.widen:

        class LateEvent(threading.Event):
            def wait(self, timeout=None):
                result = super().wait(timeout)
                time.sleep(0.005)
                return result

        create = association.Association.__init__

        def late_checkpoint(self, *args, **kwargs):
            create(self, *args, **kwargs)
            self._reactor_checkpoint = LateEvent()
            self._reactor_checkpoint.set()

        association.Association.__init__ = late_checkpoint

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(VERIFICATION)
    ae.dimse_timeout = 2
    missed = []
    started = time.monotonic()
    for number in range(options.associations):
        assoc = ae.associate("127.0.0.1", options.port, ae_title="RADX-SCP")
        if not assoc.is_established:
            raise SystemExit(f"association {number} not established")
        if options.keep:
            keep_responses(assoc)
            handing_back = assoc._serve_request

            def count_then_hand_back(message, context_id, hand_back=handing_back):
                if not message.is_valid_request:
                    taken.append(message.MessageIDBeingRespondedTo)
                return hand_back(message, context_id)

            assoc._serve_request = count_then_hand_back
        for message_id in range(1, options.echoes + 1):
            if assoc.send_c_echo(msg_id=message_id).get("Status") is None:
                missed.append((number, message_id))
                break
        if assoc.is_established:
            assoc.release()
    print(
        f"{options.associations} associations x {options.echoes} echoes in {time.monotonic() - started:.1f} s"
        f" (widen={options.widen}, keep={options.keep}): {len(missed)} responses missed,"
        f" {len(taken)} taken by the association thread" + (", all handed back" if options.keep else "")
    )
    if missed:
        print("missed (association, message ID):", missed[:20])


if __name__ == "__main__":
    main()
