"""Tests for radx.app.config: one typed configuration, each default written once, on its field."""

from __future__ import annotations

import dataclasses
import struct
import subprocess
import sys
import typing

from twisted.trial.unittest import SynchronousTestCase

from radx.app.config import SCP_FLAGS, ScpConfig, TLSConfig, TwistdLog, config_from_options, twistd_log_from
from radx.app.options import ScpOptions
from radx.scp.config import ServerConfig
from radx.storage.filing import Filing
from radx.storage.layout import FLAT_LAYOUT, ORGANIZED_LAYOUT
from radx.testing import ScpHarness, associate_rq
from radx.ul.pdu import AAbort, AAssociateAC
from tests.test_app_options import parse


def parts_of(kind: type) -> set[type]:
    """The dataclasses a configuration is made of, ``kind`` and its parts' parts, as their fields' types say."""
    found = {kind}
    for hint in typing.get_type_hints(kind).values():
        for candidate in typing.get_args(hint) or (hint,):
            if dataclasses.is_dataclass(candidate) and candidate not in found:
                found |= parts_of(candidate)
    return found


def part_in(config, kind: type):
    """The instance of ``kind`` inside ``config`` (a part of a part, maybe), or None."""
    if isinstance(config, kind):
        return config
    for each in dataclasses.fields(config):
        value = getattr(config, each.name)
        if dataclasses.is_dataclass(value):
            found = part_in(value, kind)
            if found is not None:
                return found
    return None


class OneSourceOfDefaultsTests(SynchronousTestCase):
    """A default is written once, on its field: the command line takes it from there."""

    def test_nothing_given_is_the_configuration_s_defaults(self):
        """Every field of every part, parsed from no flag at all, is the field's own default."""
        self.assertEqual(parse().config, ScpConfig())

    def test_every_flag_sets_a_field_of_the_configuration(self):
        parts = parts_of(ScpConfig)
        for flag in SCP_FLAGS:
            if flag.part is None:
                continue
            self.assertIn(flag.part, parts, flag.name)
            self.assertIn(flag.field, [each.name for each in dataclasses.fields(flag.part)], flag.name)

    def test_the_default_shown_is_the_field_s(self):
        """--help's default, given on the command line, is the field's declared default."""
        shown = ScpOptions().defaults
        for flag in SCP_FLAGS:
            if flag.switch:
                self.assertIs(flag.default, False, flag.name)
                continue
            self.assertEqual(shown[flag.name], flag.written_default, flag.name)
            if flag.part is None:
                self.assertIsNone(shown[flag.name], flag.name)
                continue
            [declared] = [each.default for each in dataclasses.fields(flag.part) if each.name == flag.field]
            typed = flag.parse(str(shown[flag.name])) if flag.parse and shown[flag.name] is not None else shown[flag.name]
            self.assertEqual(typed, declared, flag.name)

    def test_modes_are_shown_in_octal(self):
        """As chmod writes them, and as they were shown before they came from the fields."""
        self.assertEqual((ScpOptions().defaults["file-mode"], ScpOptions().defaults["dir-mode"]), ("0600", "0700"))

    def test_no_flag_with_a_value_outside_the_table(self):
        """ScpOptions' flags with a value are SCP_FLAGS' (the repeatable ones and --port have opt_ methods)."""
        options = ScpOptions()
        table = {flag.name for flag in SCP_FLAGS}
        for name in options.longOpt:
            name = name.rstrip("=")
            self.assertTrue(name in table or hasattr(options, "opt_" + name.replace("-", "_")), name)
        self.assertEqual({row[0] for row in ScpOptions.optParameters}, {f.name for f in SCP_FLAGS if not f.switch})
        self.assertEqual({row[0] for row in ScpOptions.optFlags}, {f.name for f in SCP_FLAGS if f.switch})

    def test_each_flag_reaches_its_field(self):
        """config_from_options carries every flag of SCP_FLAGS into the field it names."""
        for flag in SCP_FLAGS:
            if flag.part is None:
                continue
            # With hooks and TLS, so that every part is there.
            options = parse("--events", "e.jsonl", "--tls-cert", "c.pem", "--tls-key", "k.pem")
            marker = object()
            options[flag.name] = marker
            part = part_in(config_from_options(options), flag.part)
            self.assertIsNotNone(part, flag.name)
            if flag.switch:
                self.assertIs(getattr(part, flag.field), True, flag.name)
            else:
                self.assertIs(getattr(part, flag.field), marker, flag.name)


class ConfigurationTests(SynchronousTestCase):
    def test_parts_made_only_when_asked_for(self):
        config = parse().config
        self.assertIsNone(config.tls)
        self.assertIsNone(config.server.hooks)
        tls = parse("--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem", "--tls-port", "2762").config.tls
        self.assertEqual(tls, TLSConfig(certificate="c.pem", key="k.pem", ca="ca.pem", port=2762))

    def test_listening(self):
        listening = parse("--listen", "tcp:4107", "--bind", "::1").config.listening
        self.assertEqual((listening.endpoints, listening.bind, listening.on_port), (("tcp:4107",), "::1", True))
        self.assertFalse(parse("--listen", "tcp:4107").config.listening.on_port)

    def test_service_fields(self):
        config = parse("--threads", "2", "--stats-interval", "5", "-v", "--log-format", "json").config
        self.assertEqual((config.threads, config.stats_interval, config.log_level, config.log_format), (2, 5.0, "debug", "json"))

    def test_layout_left_out_is_organize_s(self):
        self.assertIs(ServerConfig().filing.layout, ORGANIZED_LAYOUT)
        self.assertIs(ServerConfig(filing=Filing(organize=False)).filing.layout, FLAT_LAYOUT)
        self.assertIs(parse("--organize=false").config.server.filing.layout, FLAT_LAYOUT)

    def test_frozen(self):
        with self.assertRaises(dataclasses.FrozenInstanceError):
            parse().config.threads = 8  # type: ignore[misc]

    def test_twistd_log(self):
        self.assertEqual(twistd_log_from(None), TwistdLog())
        self.assertEqual(
            twistd_log_from({"logfile": "-", "nodaemon": 1, "syslog": 0}), TwistdLog(logfile="-", nodaemon=True)
        )
        self.assertEqual(twistd_log_from({"logfile": None, "nodaemon": 0, "syslog": 1}), TwistdLog(syslog=True))

    def test_parsed_without_twisted_s_tcp(self):
        """The command line is parsed before the reactor loads, so radx dicom scp can still leave TLS out."""
        probe = (
            "import sys\n"
            "from radx.app.options import ScpOptions\n"
            "ScpOptions().parseOptions(['--threads', '2'])\n"
            "print(sorted(m for m in ('twisted.internet.tcp', 'twisted.internet.reactor', 'OpenSSL') if m in sys.modules))\n"
        )
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
        self.assertEqual((done.stdout.strip(), done.returncode), ("[]", 0), done.stderr)


class MaximumLengthTests(SynchronousTestCase):
    """--max-pdu: the Maximum Length the A-ASSOCIATE-AC advertises is the one the acceptor holds P-DATA-TF PDUs to (PS3.8 D.1)."""

    def associated(self, *arguments: str) -> tuple[ScpHarness, AAssociateAC]:
        harness = ScpHarness(dataclasses.replace(parse(*arguments).config.server, output_dir=self.mktemp(), fsync=False))
        harness.send(associate_rq().encode())
        [ac] = harness.received_pdus()
        self.assertIsInstance(ac, AAssociateAC)
        self.addCleanup(harness.disconnect)
        return harness, ac

    def p_data_header(self, length: int) -> bytes:
        return struct.pack(">BBL", 0x04, 0, length)

    def test_advertised_and_held_to(self):
        for arguments, limit in (((), 16384), (("--max-pdu", "8192"), 8192)):
            harness, ac = self.associated(*arguments)
            self.assertEqual(ac.user_information.maximum_length, limit)
            # A P-DATA-TF of the Maximum Length is awaited; one byte more is refused from its header.
            harness.send(self.p_data_header(limit))
            self.assertEqual(harness.received_pdus(), [])
            harness, _ = self.associated(*arguments)
            harness.send(self.p_data_header(limit + 1))
            [abort] = harness.received_pdus()
            self.assertIsInstance(abort, AAbort)
