"""Tests for radx.app.options: the flags of the reference, parsed the way its examples write them."""

from __future__ import annotations

import subprocess
import sys

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from radx.app.options import ScpOptions
from radx.ul.negotiation import DEFAULT_TRANSFER_SYNTAXES


def parse(*arguments: str) -> ScpOptions:
    options = ScpOptions()
    options.parseOptions(list(arguments))
    return options


class DefaultsTests(SynchronousTestCase):
    def test_reference_defaults(self):
        options = parse()
        self.assertEqual(
            {key: options[key] for key in ("port", "aet", "output-dir", "max-pdu", "max-conns", "organize", "accept-echo", "sop-class", "bind")},
            {
                "port": 11112,
                "aet": "RADX-SCP",
                "output-dir": "./dicom-received",
                "max-pdu": 16384,
                "max-conns": 10,
                "organize": True,
                "accept-echo": True,
                "sop-class": [],
                "bind": None,
            },
        )
        self.assertEqual(options["stats-interval"], 30.0)
        self.assertEqual(options.config.server.policy.transfer_syntaxes, DEFAULT_TRANSFER_SYNTAXES)

    def test_config(self):
        config = parse("--aet", "ARCHIVE", "--max-pdu", "65536", "--max-conns", "50").config.server
        self.assertEqual(config.policy.ae_title, "ARCHIVE")
        self.assertEqual(config.policy.maximum_pdu_length, 65536)
        self.assertEqual(config.max_conns, 50)
        self.assertIsNone(config.policy.sop_classes)


class CatalogueOptionTests(SynchronousTestCase):
    def test_none_by_default(self):
        self.assertIsNone(parse().config.server.catalogue)

    def test_sqlite_file(self):
        self.assertEqual(parse("--catalogue", "received.db").config.server.catalogue, "received.db")

    def test_sqlite_loaded_only_with_the_flag(self):
        """Without --catalogue, the server's start-up loads neither sqlite3 nor the catalogue's modules."""
        probe = (
            "import sys\n"
            "from twisted.internet.testing import MemoryReactorClock\n"
            "from radx.app.options import ScpOptions\n"
            "from radx.app.tap import ScpService\n"
            "options = ScpOptions()\n"
            "options.parseOptions(sys.argv[1:])\n"
            "ScpService(options.config, MemoryReactorClock())\n"
            "print(sorted(m for m in ('sqlite3', 'radx.catalogue.database') if m in sys.modules))\n"
        )
        for arguments, loaded in (([], "[]"), (["--catalogue", "x.db"], "['radx.catalogue.database', 'sqlite3']")):
            done = subprocess.run([sys.executable, "-c", probe, *arguments], capture_output=True, text=True, timeout=60)
            self.assertEqual((done.stdout.strip(), done.returncode), (loaded, 0), done.stderr)

    def test_url_refused(self):
        error = self.assertRaises(usage.UsageError, parse, "--catalogue", "mysql://radx@db/radx")
        self.assertIn("--catalogue: mysql:// catalogues are not supported", str(error))

    def test_postgresql_url(self):
        options = parse("--catalogue", "postgresql://radx@db/radx", "--catalogue-node", "scp-2")
        self.assertEqual((options["catalogue"], options["catalogue-node"]), ("postgresql://radx@db/radx", "scp-2"))
        self.assertIsNone(parse("--catalogue", "postgres://db/radx")["catalogue-node"])

    def test_node_needs_postgresql(self):
        """A SQLite catalogue is one machine's: --catalogue-node with it, or alone, is a mistake said at once."""
        for arguments in (("--catalogue", "x.db"), ()):
            error = self.assertRaises(usage.UsageError, parse, *arguments, "--catalogue-node", "scp-2")
            self.assertIn("--catalogue-node goes with a postgresql:// --catalogue", str(error))


class ReferenceExamplesTests(SynchronousTestCase):
    """The forms in the reference's Usage Examples."""

    def test_port_before_flags(self):
        options = parse("11113", "--aet", "RESEARCH-SCP")
        self.assertEqual((options["port"], options["aet"]), (11113, "RESEARCH-SCP"))

    def test_port_after_flags(self):
        self.assertEqual(parse("--aet", "X", "11114")["port"], 11114)

    def test_boolean_forms(self):
        self.assertFalse(parse("--organize=false", "--output-dir", "/data/flat")["organize"])
        self.assertTrue(parse("--organize", "--output-dir", "/archive/2024")["organize"])
        self.assertTrue(parse("--organize=true")["organize"])
        self.assertFalse(parse("--accept-echo=false")["accept-echo"])
        # A bare boolean flag does not swallow the next argument.
        options = parse("--organize", "11115")
        self.assertEqual((options["organize"], options["port"]), (True, 11115))

    def test_repeated_sop_class(self):
        options = parse("--sop-class", "1.2.840.10008.5.1.4.1.1.2", "--sop-class", "1.2.840.10008.5.1.4.1.1.4")
        self.assertEqual(options["sop-class"], ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"])
        self.assertEqual(
            options.config.server.policy.sop_classes,
            frozenset({"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"}),
        )

    def test_transfer_syntax_restriction(self):
        options = parse("--transfer-syntax", "1.2.840.10008.1.2.1")
        self.assertEqual(options.config.server.policy.transfer_syntaxes, ("1.2.840.10008.1.2.1",))

    def test_verbose(self):
        self.assertEqual(parse("-v")["log-level"], "debug")


class InvalidValuesTests(SynchronousTestCase):
    def assert_refused(self, needle, *arguments):
        error = self.assertRaises(usage.UsageError, parse, *arguments)
        self.assertIn(needle, str(error))

    def test_layout(self):
        template = "{PatientID}/{StudyDate}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"
        options = parse("--layout", template)
        self.assertEqual(options["layout"].template, template)
        self.assertEqual(set(options["layout"].extra_tags), {"PatientID", "StudyDate"})
        self.assertIs(options.config.server.filing.layout, options["layout"])

    def test_organize_is_a_layout(self):
        """--organize and --organize=false become the two fixed templates, compiled once at start."""
        self.assertTrue(parse()["layout"].fixed)
        self.assertTrue(parse("--organize")["layout"].fixed)
        self.assertIs(parse("--organize=false")["layout"].fixed, False)

    def test_bad_layouts(self):
        self.assert_refused("--layout: {Nonsense} is not a DICOM keyword", "--layout", "{Nonsense}/{SOPInstanceUID}.dcm")
        self.assert_refused("--layout: '/data/{SOPInstanceUID}.dcm' is an absolute path", "--layout", "/data/{SOPInstanceUID}.dcm")
        self.assert_refused("--layout: '..'", "--layout", "../{SOPInstanceUID}.dcm")
        self.assert_refused("--layout: the file name", "--layout", "{SOPInstanceUID}/x.dcm")
        self.assert_refused("do not go together", "--organize=false", "--layout", "{SOPInstanceUID}.dcm")

    def test_on_duplicate(self):
        self.assertEqual(parse()["on-duplicate"], "replace")
        for policy in ("replace", "keep", "unique", "reject"):
            self.assertEqual(parse("--on-duplicate", policy).config.server.filing.on_duplicate, policy)
        self.assert_refused("--on-duplicate: expected one of replace, keep, unique, reject", "--on-duplicate", "skip")

    def test_pdu_out_of_range(self):
        self.assert_refused("between 4096 and", "--max-pdu", "100")
        self.assert_refused("between 4096 and", "--max-pdu", "999999999")

    def test_malformed_sop_class(self):
        self.assert_refused("not a valid UID", "--sop-class", "1.2.abc")

    def test_non_storage_sop_class(self):
        self.assert_refused("not a Storage SOP Class", "--sop-class", "1.2.840.10008.5.1.4.1.2.2.1")
        self.assert_refused("--accept-echo", "--sop-class", "1.2.840.10008.1.1")
        # The DICOMDIR's: a Media Storage SOP Class only (PS3.4 Table I.4-1).
        self.assert_refused("not a Storage SOP Class", "--sop-class", "1.2.840.10008.1.3.10")

    def test_boolean_with_a_space_is_explained(self):
        self.assert_refused("--organize=false", "--organize", "false")

    def test_long_ae_title(self):
        self.assert_refused("at most 16 characters", "--aet", "A-VERY-LONG-AE-TITLE")

    def test_bad_boolean(self):
        self.assert_refused("true or false", "--organize=maybe")

    def test_bad_port(self):
        self.assert_refused("65535", "70000")

    def test_too_many_arguments(self):
        self.assertRaises(usage.UsageError, parse, "11112", "11113")

    def test_bad_log_level(self):
        self.assert_refused("debug, info, warn or error", "--log-level", "loud")


class HookOptionsTests(SynchronousTestCase):
    """--exec-on-*, their timeouts and --events: split once, checked at start, into the server's configuration."""

    def test_no_hooks_by_default(self):
        self.assertIsNone(parse().config.server.hooks)

    def test_hooks_in_the_configuration(self):
        options = parse(
            "--exec-on-store", "true #f", "--exec-on-study", "true #p", "--study-timeout", "5",
            "--series-timeout", "2", "--exec-concurrency", "2", "--exec-timeout", "9", "--events", "e.jsonl",
        )
        hooks = options.config.server.hooks
        self.assertEqual([command.kind for command in hooks.commands], ["store", "study"])
        self.assertEqual(hooks.command("study").arguments({"folder": "/x"}), ["true", "/x"])
        self.assertEqual((hooks.series_timeout, hooks.study_timeout, hooks.concurrency, hooks.timeout, hooks.events),
                         (2.0, 5.0, 2, 9.0, "e.jsonl"))

    def test_defaults(self):
        hooks = parse("--events", "e.jsonl").config.server.hooks
        self.assertEqual((hooks.commands, hooks.series_timeout, hooks.study_timeout, hooks.concurrency, hooks.timeout),
                         ((), 60.0, 60.0, 4, 600.0))

    def test_refused_at_start(self):
        for needle, arguments in [
            ("--exec-on-store: unknown placeholder #{Nope}", ("--exec-on-store", "true #{Nope}")),
            ("--exec-on-study: #f has no meaning", ("--exec-on-study", "true #f")),
            ("--exec-on-series: 'no-such-hook-program' is not found", ("--exec-on-series", "no-such-hook-program")),
            ("--exec-on-store: cannot split", ("--exec-on-store", "true 'open")),
            ("--exec-timeout: must be a positive number", ("--exec-on-store", "true", "--exec-timeout", "0")),
            ("--exec-concurrency: must be at least 1", ("--exec-on-store", "true", "--exec-concurrency", "0")),
        ]:
            error = self.assertRaises(usage.UsageError, parse, *arguments)
            self.assertIn(needle, str(error))
class HttpOptionTests(SynchronousTestCase):
    def test_off_by_default(self):
        options = parse()
        self.assertIsNone(options["http"])
        self.assertEqual(options["min-free-space"], 0)

    def test_min_free_space_sizes(self):
        for text, size in (("0", 0), ("4096", 4096), ("500MB", 500_000_000), ("1GiB", 1 << 30), ("1.5G", 1_500_000_000)):
            options = parse("--http", "tcp:9112:interface=127.0.0.1", "--min-free-space", text)
            self.assertEqual(options["min-free-space"], size, text)

    def test_min_free_space_errors_name_the_flag(self):
        for text in ("lots", "-1", "1XB", "inf"):
            with self.assertRaises(usage.UsageError) as caught:
                parse("--http", "tcp:9112", "--min-free-space", text)
            self.assertEqual(
                str(caught.exception), f"--min-free-space: expected a size such as 0, 500MB or 1GiB, not {text!r}"
            )

    def test_min_free_space_needs_http(self):
        with self.assertRaises(usage.UsageError) as caught:
            parse("--min-free-space", "1GiB")
        self.assertEqual(str(caught.exception), "--min-free-space needs --http: it is what /readyz checks")


class WorkersOptionTests(SynchronousTestCase):
    def test_one_process_by_default(self):
        from radx.app.tap import ScpService, scp_service

        config = parse().config
        self.assertEqual(config.workers, 1)
        self.assertIs(type(scp_service(config, reactor=object())), ScpService)

    def test_a_number_or_auto(self):
        import os

        self.assertEqual(parse("--workers", "3").config.workers, 3)
        self.assertEqual(parse("--workers", "auto").config.workers, len(os.sched_getaffinity(0)))
        self.assertEqual(parse("--workers", "AUTO").config.workers, len(os.sched_getaffinity(0)))

    def test_refused(self):
        for text in ("0", "-1", "many"):
            with self.assertRaises(usage.UsageError) as caught:
                parse("--workers", text)
            self.assertTrue(str(caught.exception).startswith("--workers: "), str(caught.exception))

    def test_the_configuration_travels_whole(self):
        """What the supervisor hands its workers: its configuration, pickled, read back the same."""
        import pickle

        config = parse(
            "11112", "--workers", "2", "--layout", "{PatientID}/{SOPInstanceUID}.dcm", "--allow-ip", "10.0.0.0/8",
            "--exec-on-store", "true #f", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--listen", "tcp:4107",
        ).config  # fmt: skip
        again = pickle.loads(pickle.dumps(config))
        self.assertEqual(again.server.filing.layout.template, config.server.filing.layout.template)
        self.assertEqual(
            (again.server.allowed_networks, again.server.hooks, again.tls, again.listening, again.workers),
            (config.server.allowed_networks, config.server.hooks, config.tls, config.listening, config.workers),
        )
