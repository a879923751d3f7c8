"""Wireshark's DICOM dissector reads what radx sends: a capture of real associations over loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from pydicom.data import get_testdata_file
from twisted.internet import defer, reactor, task, threads

from tests import dicomfiles
from tests.interop import ServerTestCase, require_dcmtk

TSHARK = "/usr/bin/tshark"


def _start_capture(port: int, path: str) -> subprocess.Popen:
    """tshark capturing TCP port ``port`` on loopback; returns once it captures.

    tshark says it is capturing a little before it is: probe connections
    to the port are made until the capture file grows.
    """
    if not os.access(TSHARK, os.X_OK):
        raise AssertionError("tshark is not installed: run scripts/test.sh, which installs it")
    capture = subprocess.Popen(
        [TSHARK, "-i", "lo", "-f", f"tcp port {port}", "-w", path, "-a", "duration:60"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in capture.stderr:
        if "Capturing on" in line:
            break
    else:
        raise AssertionError(f"tshark did not start capturing (exit {capture.wait()})")
    for _ in range(100):
        size = os.path.getsize(path) if os.path.exists(path) else 0
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        time.sleep(0.05)
        if os.path.exists(path) and os.path.getsize(path) > size and size > 0:
            return capture
    raise AssertionError("tshark captured nothing of the probe connections")


def _stop_capture(capture: subprocess.Popen) -> None:
    capture.send_signal(signal.SIGINT)
    capture.wait(timeout=30)
    capture.stderr.close()


def _dissect(path: str, port: int, *arguments: str) -> str:
    return subprocess.run(
        [TSHARK, "-r", path, "-d", f"tcp.port=={port},dicom", *arguments],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


class DissectorTests(ServerTestCase):
    def capture(self, tool, *files):
        """Capture one run of a DCMTK tool against radx; the pcap's path."""
        return self.capture_run(lambda port: (tool, "-aec", "RADX-SCP", "127.0.0.1", str(port), *files))

    @defer.inlineCallbacks
    def capture_run(self, command):
        """Capture one run of ``command(port)`` (a program and its arguments) against radx; the pcap's path."""
        self.start_server()
        path = os.path.abspath(self.mktemp() + ".pcap")
        capture = yield threads.deferToThread(_start_capture, self.port, path)
        try:
            out, err, code = yield self.run_tool(*command(self.port))
            self.assertEqual(code, 0, err)
            # Let the last segments (release, FIN) reach the capture.
            yield task.deferLater(reactor, 0.5, lambda: None)
        finally:
            yield threads.deferToThread(_stop_capture, capture)
        return path

    def assert_clean(self, path: str, expected: list[str]) -> None:
        summary = _dissect(path, self.port, "-Y", "dicom", "-T", "fields", "-e", "dicom.pdu.type")
        types = [line for line in summary.split() if line]
        for pdu_type in expected:
            self.assertIn(pdu_type, types, summary)
        # TCP's own analysis (SACKs, windows) is loopback's business, not ours: on a
        # loaded machine a spurious retransmission brings a D-SACK, a TCP warning
        # that is not among tcp.analysis.flags.
        problems = _dissect(
            path, self.port, "-Y",
            "_ws.malformed || (_ws.expert.severity >= warning && !tcp.analysis.flags && !tcp.options.sack.dsack)",
        )
        self.assertEqual(problems.strip(), "", problems)

    @defer.inlineCallbacks
    def test_echo_association(self):
        path = yield self.capture(require_dcmtk("echoscu"))
        # A-ASSOCIATE-RQ, -AC, P-DATA-TF, A-RELEASE-RQ, -RP.
        self.assert_clean(path, ["0x01", "0x02", "0x04", "0x05", "0x06"])
        info = _dissect(path, self.port, "-Y", "dicom")
        self.assertIn("C-ECHO-RSP", info)

    @defer.inlineCallbacks
    def test_store_association(self):
        path = yield self.capture(require_dcmtk("storescu"), get_testdata_file("CT_small.dcm"))
        self.assert_clean(path, ["0x01", "0x02", "0x04", "0x05", "0x06"])
        info = _dissect(path, self.port, "-Y", "dicom")
        self.assertIn("C-STORE-RSP", info)
        self.assertIn("Success", info)

    @defer.inlineCallbacks
    def test_radx_on_both_ends_with_an_operations_window(self):
        """radx dicom store to radx: the window in the RQ and AC, C-STOREs outstanding together, all well-formed."""
        files = dicomfiles.write_ct_series(self.mktemp(), 6, rows=64, columns=64, seed=23)
        path = yield self.capture_run(
            lambda port: (
                sys.executable, "-m", "radx.app.cli", "dicom", "store", *files,
                "--host", "127.0.0.1", "--port", str(port), "--called-ae", "RADX-SCP", "--max-ops", "4",
            )  # fmt: skip
        )
        self.assert_clean(path, ["0x01", "0x02", "0x04", "0x05", "0x06"])
        info = _dissect(path, self.port, "-Y", "dicom", "-T", "fields", "-e", "_ws.col.Info")
        self.assertEqual(info.count("C-STORE-RSP"), 6, info)
        # The second request went out before any response came back.
        self.assertLess(info.index("C-STORE-RQ ID=2"), info.index("C-STORE-RSP"), info)
        # The A-ASSOCIATE-RQ proposes 4 operations invoked, 1 performed; the AC grants the same.
        windows = _dissect(path, self.port, "-Y", "dicom.userinfo.asyncneg", "-T", "fields",
                           "-e", "dicom.pdu.type", "-e", "dicom.userinfo.asyncneg.maxnumopsinv",
                           "-e", "dicom.userinfo.asyncneg.maxnumopsper")  # fmt: skip
        self.assertEqual(windows.split("\n")[:2], ["0x01\t4\t1", "0x02\t4\t1"], windows)
