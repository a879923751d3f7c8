"""`radx dicom echo` and `radx dicom store` as commands, in subprocesses, against real peers over loopback.

The reference's "Testing the Server" commands run as written, but for the
port: every server here listens on a free ephemeral port, never 11112.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys

from twisted.internet import defer, protocol, reactor, task, utils
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from radx.app.scu_cli import Progress
from radx.scp.factory import SCPFactory
from radx.scu.association import AssociationError, client_endpoint
from radx.scu.echo import echo
from radx.storage.filing import Filing
from radx.ul.negotiation import AcceptorPolicy
from tests import dicomfiles
from tests.interop import DCMTK_ENV, ServerTestCase, abort_at_c_store, process_status, require_dcmtk, reserved_port
from tests.test_interop_store import organized_path, spawn

CT = dicomfiles.CT_IMAGE_STORAGE
MiB = 1 << 20
ENV = dict(os.environ)


def radx(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "radx.app.cli", *arguments]


class CommandTestCase(ServerTestCase):
    timeout = 60

    @defer.inlineCallbacks
    def radx(self, *arguments: str, path: str | None = None):
        """Run `radx ARGUMENTS`; (stdout, stderr, exit status) as text."""
        command = radx(*arguments)
        out, err, code = yield self.run_tool(command[0], *command[1:], env=ENV, path=path)
        return out.decode(), err.decode(), code

    def run_tool(self, executable, *arguments, env=None, path=None):
        return utils.getProcessOutputAndValue(executable, arguments, env=env or DCMTK_ENV, path=path)

    def start_second_server(self, config):
        """Another radx SCP in this process; its port."""
        os.makedirs(config.output_dir, exist_ok=True)
        pool = ThreadPool(minthreads=1, maxthreads=2, name="test-second")
        pool.start()
        self.addCleanup(pool.stop)
        factory = SCPFactory(config, reactor, pool)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")

        @defer.inlineCallbacks
        def stop():
            yield port.stopListening()
            for connection in list(factory.connections):
                connection.transport.abortConnection()
            while factory.connections:
                yield task.deferLater(reactor, 0.01, lambda: None)

        self.addCleanup(stop)
        self.second_factory = factory
        return port.getHost().port

    @defer.inlineCallbacks
    def start_storescp(self, *options: str, tls_options=None):
        """
        DCMTK storescp, bit-preserving, accepting every transfer syntax, with
        ``options`` (+tls...) and ``tls_options`` to reach it; (port, output folder).
        """
        output = self.mktemp()
        os.makedirs(output)
        port = reserved_port(self)
        storescp = spawn(
            require_dcmtk("storescp"), *options, "+B", "+xa", "-aet", "RADX-SCP", "-od", output, str(port), env=DCMTK_ENV
        )

        def stop():
            if not storescp.ended.called:
                storescp.transport.signalProcess("TERM")
            return storescp.ended

        self.addCleanup(stop)
        endpoint = client_endpoint(reactor, "127.0.0.1", port, 1, tls_options)
        # storescp answers C-ECHO: it is up when an echo succeeds.
        for _ in range(100):
            try:
                yield echo(endpoint, reactor, "RADX-SCP", "RADX-SCU", timeout=5)
                return port, output
            except AssociationError:
                yield task.deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"storescp did not start: {storescp.text}")


class EchoCommandTests(CommandTestCase):
    @defer.inlineCallbacks
    def test_as_the_reference_writes_it(self):
        """radx dicom echo localhost PORT --called-ae RADX-SCP"""
        self.start_server()
        out, err, code = yield self.radx("dicom", "echo", "localhost", str(self.port), "--called-ae", "RADX-SCP")
        self.assertEqual(code, 0, err)
        self.assertRegex(out, rf"^C-ECHO to RADX-SCP@localhost:{self.port}: Success \(\d+\.\d ms\)\n$")
        self.assertEqual(self.factory.stats.echo_requests, 1)

    @defer.inlineCallbacks
    def test_count_on_one_association(self):
        self.start_server()
        out, err, code = yield self.radx("dicom", "echo", "127.0.0.1", str(self.port), "--count", "3", "--calling-ae", "WS1")
        self.assertEqual(code, 0, err)
        self.assertEqual(len(re.findall("Success", out)), 3, out)
        self.assertEqual((self.factory.stats.echo_requests, self.factory.stats.associations), (3, 1))

    @defer.inlineCallbacks
    def test_rejected(self):
        self.start_server()
        out, err, code = yield self.radx("dicom", "echo", "127.0.0.1", str(self.port), "--called-ae", "WRONG")
        self.assertEqual(code, 3)
        self.assertEqual(
            err,
            f"C-ECHO to WRONG@127.0.0.1:{self.port}: Association rejected: Called AE Title Not Recognized"
            " (rejected-permanent, service-user)\n",
        )

    @defer.inlineCallbacks
    def test_verification_not_accepted(self):
        """A server with --accept-echo=false: associated, but no Verification context; exit 1."""
        self.start_server(self.server_config(policy=AcceptorPolicy(accept_echo=False)))
        out, err, code = yield self.radx("dicom", "echo", "127.0.0.1", str(self.port))
        self.assertEqual(code, 1)
        self.assertIn("presentation context not accepted: abstract-syntax-not-supported (provider rejection)", err)

    @defer.inlineCallbacks
    def test_refused(self):
        out, err, code = yield self.radx("dicom", "echo", "127.0.0.1", str(reserved_port(self)))
        self.assertEqual(code, 4)
        self.assertIn("Cannot connect: connection refused\n", err)
        self.assertEqual(err.lower().count("refused"), 1, err)

    @defer.inlineCallbacks
    def test_silent_peer_times_out(self):
        """A peer that accepts the connection and never answers: A-ABORT after --timeout, exit 4."""
        factory = protocol.Factory.forProtocol(protocol.Protocol)
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        out, err, code = yield self.radx("dicom", "echo", "127.0.0.1", str(listening.getHost().port), "--timeout", "0.5")
        self.assertEqual(code, 4)
        self.assertIn("Timed out: no answer to the A-ASSOCIATE-RQ within 0.5 s", err)

    @defer.inlineCallbacks
    def test_dcmtk_storescp_answers(self):
        port, _ = yield self.start_storescp()
        out, err, code = yield self.radx("dicom", "echo", "127.0.0.1", str(port))
        self.assertEqual(code, 0, err)
        self.assertIn("Success", out)

    @defer.inlineCallbacks
    def test_usage(self):
        out, err, code = yield self.radx("dicom", "echo")
        self.assertEqual(code, 1)
        self.assertIn("Usage: radx dicom echo HOST [PORT] [flags]", err)


class StoreCommandTests(CommandTestCase):
    @defer.inlineCallbacks
    def test_file_as_the_reference_writes_it(self):
        """radx dicom store test.dcm --host localhost --port PORT --called-ae RADX-SCP"""
        folder = self.mktemp()
        (source,) = dicomfiles.write_ct_series(folder, 1, rows=64, columns=64, seed=31)
        os.rename(source, os.path.join(folder, "test.dcm"))
        source = os.path.join(folder, "test.dcm")
        self.start_server()
        out, err, code = yield self.radx(
            "dicom", "store", "test.dcm", "--host", "localhost", "--port", str(self.port), "--called-ae", "RADX-SCP",
            path=folder,
        )  # fmt: skip
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"^Sent 1 file \(0\.0 MB\) in \d+\.\d s: 1 succeeded, 0 failed\n$")
        self.assertTrue(dicomfiles.same_data_set(organized_path(self.factory.config.output_dir, source), source))

    @defer.inlineCallbacks
    def test_dir_as_the_reference_writes_it(self):
        """radx dicom store --dir /test-data --host localhost --port PORT --called-ae RADX-SCP"""
        folder = self.mktemp()
        sources = dicomfiles.write_ct_series(folder, 12, rows=64, columns=64, series=2, seed=32)
        # Not sent: in a subfolder (no --recursive), hidden.
        dicomfiles.write_ct_series(os.path.join(folder, "sub"), 1, rows=8, columns=8, seed=33)
        self.start_server()
        out, err, code = yield self.radx(
            "dicom", "store", "--dir", folder, "--host", "localhost", "--port", str(self.port), "--called-ae", "RADX-SCP"
        )
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"^Sent 12 files \(\d+\.\d MB\) in \d+\.\d s: 12 succeeded, 0 failed\n$")
        self.assertEqual(self.factory.stats.stores_succeeded, 12)
        for source in sources:
            self.assertTrue(dicomfiles.same_data_set(organized_path(self.factory.config.output_dir, source), source))

    @defer.inlineCallbacks
    def test_recursive_four_associations(self):
        folder = self.mktemp()
        sources = dicomfiles.write_ct_series(os.path.join(folder, "a"), 10, rows=64, columns=64, seed=34)
        sources += dicomfiles.write_ct_series(os.path.join(folder, "b", "c"), 10, rows=64, columns=64, seed=35)
        self.start_server()
        out, err, code = yield self.radx(
            "dicom", "store", "--dir", folder, "--recursive", "--conns", "4", "--host", "127.0.0.1", "--port", str(self.port)
        )
        self.assertEqual(code, 0, err)
        self.assertIn("Sent 20 files", out)
        self.assertEqual((self.factory.stats.stores_succeeded, self.factory.stats.associations), (20, 4))
        for source in sources:
            self.assertTrue(dicomfiles.same_data_set(organized_path(self.factory.config.output_dir, source), source))

    @defer.inlineCallbacks
    def test_failures_named_with_their_reasons(self):
        """A SOP class the server does not take, a file that is not DICOM: each named; the rest stored; exit 1."""
        folder = self.mktemp()
        (ct,) = dicomfiles.write_ct_series(folder, 1, rows=16, columns=16, seed=36)
        mr = dicomfiles.pydicom_test_files()["implicit_vr_little_endian"].path
        text = os.path.join(folder, "notes.txt")
        with open(text, "w") as fp:
            fp.write("not DICOM\n")
        self.start_server(self.server_config(policy=AcceptorPolicy(sop_classes=frozenset({CT}))))
        out, err, code = yield self.radx("dicom", "store", ct, mr, text, "--host", "127.0.0.1", "--port", str(self.port))
        self.assertEqual(code, 1)
        self.assertEqual(
            sorted(err.splitlines()),
            sorted(
                [
                    f"FAILED {mr}: presentation context not accepted: abstract-syntax-not-supported (provider rejection)",
                    f"FAILED {text}: not a DICOM Part 10 file (no DICM prefix)",
                ]
            ),
        )
        self.assertRegex(out, r"^Sent 1 file \(0\.0 MB\) in \d+\.\d s: 1 succeeded, 0 failed, 2 not sent\n$")
        self.assertEqual(self.factory.stats.stores_succeeded, 1)

    @defer.inlineCallbacks
    def test_a_missing_file_is_not_sent(self):
        (ct,) = dicomfiles.write_ct_series(self.mktemp(), 1, rows=16, columns=16, seed=41)
        missing = self.mktemp() + ".dcm"
        self.start_server()
        out, err, code = yield self.radx("dicom", "store", ct, missing, "--host", "127.0.0.1", "--port", str(self.port))
        self.assertEqual(code, 1)
        self.assertEqual(err, f"FAILED {missing}: cannot read: No such file or directory\n")
        self.assertRegex(out, r"^Sent 1 file \(0\.0 MB\) in \d+\.\d s: 1 succeeded, 0 failed, 1 not sent\n$")

    @defer.inlineCallbacks
    def test_after_an_abort_a_new_association_sends_the_rest(self):
        """
        A server that aborts the first association as its second C-STORE-RQ
        arrives: that file failed, the three after it stored on a second
        association; exit 1.
        """
        sources = dicomfiles.write_ct_series(self.mktemp(), 5, rows=16, columns=16, seed=42)
        aborted = abort_at_c_store(self, lambda association, request: (association, request) == (1, 2))
        self.start_server()
        out, err, code = yield self.radx(
            "dicom", "store", *sources, "--max-ops", "1", "--host", "127.0.0.1", "--port", str(self.port)
        )
        self.assertEqual(code, 1)
        self.assertEqual(err, f"FAILED {sources[1]}: Association aborted by the peer (A-ABORT, service-user)\n")
        self.assertRegex(out, r"^Sent 5 files \(0\.0 MB\) in \d+\.\d s: 4 succeeded, 1 failed\n$")
        self.assertEqual((aborted, self.factory.stats.associations, self.factory.stats.stores_succeeded), ([(1, 2)], 2, 4))
        for source in sources[:1] + sources[2:]:
            self.assertTrue(dicomfiles.same_data_set(organized_path(self.factory.config.output_dir, source), source))

    @defer.inlineCallbacks
    def test_gives_up_after_three_associations_in_a_row_fail(self):
        """A server that aborts every association at its first C-STORE-RQ: three tried, then the rest not sent; exit 1."""
        sources = dicomfiles.write_ct_series(self.mktemp(), 5, rows=16, columns=16, seed=43)
        aborted = abort_at_c_store(self, lambda association, request: True)
        self.start_server()
        out, err, code = yield self.radx(
            "dicom", "store", *sources, "--max-ops", "1", "--host", "127.0.0.1", "--port", str(self.port)
        )
        self.assertEqual(code, 1)
        why = "Association aborted by the peer (A-ABORT, service-user)"
        self.assertEqual(
            err.splitlines(),
            [f"FAILED {s}: {why}" for s in sources[:3]]
            + [f"FAILED {s}: not sent: {why}" for s in sources[3:]]
            + [f"Gave up: 3 associations in a row failed; the last: {why}"],
        )
        self.assertRegex(out, r"^Sent 3 files \(0\.0 MB\) in \d+\.\d s: 0 succeeded, 3 failed, 2 not sent\n$")
        self.assertEqual(aborted, [(1, 1), (2, 1), (3, 1)])

    @defer.inlineCallbacks
    def test_failure_status_named(self):
        (good,) = dicomfiles.write_ct_series(self.mktemp(), 1, rows=16, columns=16, seed=37)
        with open(good, "rb") as fp:
            data = fp.read()
        instance = dicomfiles.instance_uids(good)[2].encode()
        bad = self.mktemp() + ".dcm"
        with open(bad, "wb") as fp:
            fp.write(data.replace(instance, b"1.2.x" + instance[5:]))  # meta and data set
        self.start_server()
        out, err, code = yield self.radx("dicom", "store", bad, "--host", "127.0.0.1", "--port", str(self.port))
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith(f"FAILED {bad}: status 0x0117 (Invalid object instance): malformed"), err)

    @defer.inlineCallbacks
    def test_large_file_in_bounded_memory(self):
        """A 200 MiB object streamed: byte-identical on arrival; the sender's peak RSS stays small."""
        folder = self.mktemp()
        os.makedirs(folder)
        large = dicomfiles.write_large_multiframe(os.path.join(folder, "large.dcm"), 200 * MiB, seed=38)
        self.addCleanup(os.remove, large)
        self.start_server(self.server_config(fsync=False, filing=Filing(organize=False)))
        sender = spawn(*radx("dicom", "store", large, "--host", "127.0.0.1", "--port", str(self.port)), env=ENV)
        peak = 0
        while not sender.ended.called:
            try:
                peak = max(peak, process_status(sender.transport.pid, "VmHWM"))
            except (OSError, AssertionError, TypeError):
                pass
            yield task.deferLater(reactor, 0.02, lambda: None)
        ended = yield sender.ended
        self.assertEqual(getattr(ended, "exitCode", None), 0, sender.text)
        self.assertIn("Sent 1 file (209.7 MB)", sender.text)
        self.assertLess(peak, 100 * MiB, f"peak RSS {peak / MiB:.1f} MiB")
        self.assertGreater(peak, 0)
        sop_instance = dicomfiles.instance_uids(large)[2]
        stored = os.path.join(self.factory.config.output_dir, f"{sop_instance}.dcm")
        self.assertTrue(dicomfiles.same_data_set(stored, large))
        os.remove(stored)

    @defer.inlineCallbacks
    def test_dir_to_dcmtk_storescp(self):
        """radx dicom store --dir to DCMTK storescp (bit-preserving): every data set byte-identical."""
        folder = self.mktemp()
        sources = dicomfiles.write_ct_series(folder, 8, rows=64, columns=64, seed=39)
        # Distinct SOP Instance UIDs: storescp names files by them.
        for name in ("explicit_vr_big_endian", "explicit_vr_little_endian", "jpeg_baseline"):
            path = dicomfiles.pydicom_test_files()[name].path
            shutil.copy(path, os.path.join(folder, f"{name}.dcm"))
            sources.append(os.path.join(folder, f"{name}.dcm"))
        port, output = yield self.start_storescp()
        out, err, code = yield self.radx("dicom", "store", "--dir", folder, "--host", "127.0.0.1", "--port", str(port), "--conns", "2")
        self.assertEqual(code, 0, err)
        self.assertIn("11 succeeded, 0 failed", out)
        received = {}
        for name in os.listdir(output):
            received[dicomfiles.instance_uids(os.path.join(output, name))[2]] = os.path.join(output, name)
        for source in sources:
            stored = received[dicomfiles.instance_uids(source)[2]]
            self.assertTrue(dicomfiles.same_data_set(stored, source), f"{stored} differs from {source}")

    @defer.inlineCallbacks
    def test_odd_deflated_data_set_to_dcmtk_storescp(self):
        """
        pydicom's image_dfl.dcm, a 4303-byte deflated data set: sent with its
        trailing NULL byte (PS3.5 A.5), which storescp needs (it aborts on an
        odd fragment) and writes as it arrived.
        """
        source = dicomfiles.pydicom_test_files()["deflated_explicit_vr_little_endian"].path
        port, output = yield self.start_storescp()
        out, err, code = yield self.radx("dicom", "store", source, "--host", "127.0.0.1", "--port", str(port))
        self.assertEqual(code, 0, err)
        self.assertIn("1 succeeded, 0 failed", out)
        (name,) = os.listdir(output)
        stored = dicomfiles.data_set_bytes(os.path.join(output, name))
        self.assertEqual(stored, dicomfiles.data_set_bytes(source) + b"\x00")
        self.assertEqual(len(stored), 4304)

    @defer.inlineCallbacks
    def test_odd_deflated_data_set_to_radx(self):
        """The same file to radx's own server: stored as it arrived, with the trailing NULL byte."""
        test_file = dicomfiles.pydicom_test_files()["deflated_explicit_vr_little_endian"]
        self.start_server(self.server_config(filing=Filing(organize=False)))
        out, err, code = yield self.radx("dicom", "store", test_file.path, "--host", "127.0.0.1", "--port", str(self.port))
        self.assertEqual(code, 0, err)
        self.assertIn("1 succeeded, 0 failed", out)
        stored = os.path.join(self.factory.config.output_dir, f"{test_file.sop_instance_uid}.dcm")
        self.assertEqual(dicomfiles.data_set_bytes(stored), dicomfiles.data_set_bytes(test_file.path) + b"\x00")

    @defer.inlineCallbacks
    def test_router_one_pass(self):
        """The reference's DICOM Router: one pass of its loop body, run by sh, to a second radx SCP.

        The reference forwards with `radx dicom store "$file" --host pacs1.example.com`,
        on the default port 11112 and called AE RADX-SCP; here the second server
        keeps the default AE title and listens on a free port, given with --port.
        The reference's glob, /router/queue/*/*/*/*.dcm, is one level deeper than
        the Study/Series/Instance.dcm layout the same reference gives the server:
        the loop here globs that layout, QUEUE/*/*/*.dcm.
        """
        sources = dicomfiles.write_ct_series(self.mktemp(), 3, rows=32, columns=32, seed=40)
        queue = self.mktemp()
        self.start_server(self.server_config(output_dir=queue, policy=AcceptorPolicy(ae_title="ROUTER-SCP")))
        destination = self.server_config()
        destination_port = self.start_second_server(destination)
        out, err, code = yield self.radx(
            "dicom", "store", *sources, "--host", "127.0.0.1", "--port", str(self.port), "--called-ae", "ROUTER-SCP"
        )
        self.assertEqual(code, 0, err)
        script = (
            'radx() { "$PYTHON" -m radx.app.cli "$@"; }\n'
            "for file in $QUEUE/*/*/*.dcm; do\n"
            '    radx dicom store "$file" --host 127.0.0.1 --port $PORT || exit 1\n'
            '    rm "$file"\n'
            "done\n"
        )
        env = dict(ENV, PYTHON=sys.executable, QUEUE=queue, PORT=str(destination_port))
        out, err, code = yield self.run_tool("/bin/sh", "-c", script, env=env)
        self.assertEqual(code, 0, (out + err).decode())
        self.assertEqual(out.decode().count("1 succeeded, 0 failed"), 3)
        self.assertEqual(self.second_factory.stats.stores_succeeded, 3)
        for source in sources:
            self.assertTrue(dicomfiles.same_data_set(organized_path(destination.output_dir, source), source))
            self.assertFalse(os.path.exists(organized_path(queue, source)))

    @defer.inlineCallbacks
    def test_usage(self):
        out, err, code = yield self.radx("dicom", "store", "--host", "127.0.0.1")
        self.assertEqual(code, 1)
        self.assertIn("name files to send, or a folder with --dir", err)


class ProgressTests(SynchronousTestCase):
    """The progress bar of `radx dicom store` on a terminal: files, bytes, rate; ten redraws a second at most."""

    def setUp(self):
        self.now = 100.0
        self.stream = io.StringIO()
        self.progress = Progress(self.stream, total_files=4, total_bytes=4_000_000, clock=lambda: self.now)

    def test_line(self):
        self.now += 2
        self.progress.data_sent(1_000_000)
        self.progress.file_done()
        self.assertEqual(self.progress.line(), "[######------------------] 1/4 files  1.0/4.0 MB  0.5 MB/s")

    def test_redrawn_at_most_ten_times_a_second(self):
        for _ in range(50):
            self.progress.data_sent(10_000)
            self.now += 0.01
        # 0.5 s: the first draw, then one every 0.1 s.
        self.assertEqual(self.stream.getvalue().count("\r"), 5)
        self.progress.draw(force=True)
        self.assertEqual(self.stream.getvalue().count("\r"), 6)

    def test_lines_printed_above_the_bar(self):
        self.progress.draw(force=True)
        self.progress.say(self.stream, "FAILED a.dcm: why\n")
        self.assertTrue(self.stream.getvalue().endswith("\r\x1b[KFAILED a.dcm: why\n"))
        self.progress.clear()
        self.assertTrue(self.stream.getvalue().endswith("FAILED a.dcm: why\n"))  # nothing shown, nothing cleared
