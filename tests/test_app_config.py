"""Tests for radx.app.config: one typed configuration, each default written once, on its field."""

from __future__ import annotations

import dataclasses
import os
import struct
import subprocess
import sys
import typing
from dataclasses import dataclass

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from radx.app import flag_values as values
from radx.app.catalogue_cli import CATALOGUE_FLAGS, CatalogueConfig, CatalogueOptions
from radx.app.client_config import CLIENT_FLAGS, ECHO_FLAGS, STORE_FLAGS, ClientTLS, EchoConfig, Peer, StoreConfig
from radx.app.config import FILING_FLAGS, SCP_FLAGS, Flag, ScpConfig, TLSConfig, TwistdLog, part_from, twistd_log_from
from radx.app.options import CommandOptions, ScpOptions
from radx.app.organize_cli import ORGANIZE_FLAGS, OrganizeConfig, OrganizeOptions
from radx.app.scu_cli import EchoOptions, StoreOptions
from radx.scp.config import ServerConfig
from radx.scu.config import RequestorConfig
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


class Command:
    """A command's options, its table of flags, and what parsing the fewest arguments it takes gives."""

    def __init__(self, options: type, flags: tuple, least: tuple, config, whole: tuple = ()) -> None:
        self.options, self.flags, self.least, self.config = options, flags, least, config
        # Arguments with which every part of its configuration is there (TLS's, hooks').
        self.whole = least + whole

    def parse(self, *arguments: str):
        options = self.options()
        options.parseOptions(list(arguments))
        return options


def commands(test: SynchronousTestCase) -> list[Command]:
    """Each `radx dicom` command: scp, echo, store, catalogue, organize."""
    folder = test.mktemp()
    os.makedirs(folder)
    return [
        Command(ScpOptions, SCP_FLAGS, (), ScpConfig(), ("--events", "e.jsonl", "--tls-cert", "c.pem", "--tls-key", "k.pem")),
        Command(EchoOptions, ECHO_FLAGS, ("pacs",), EchoConfig(peer=Peer(host="pacs")), ("--tls",)),
        Command(StoreOptions, STORE_FLAGS, ("a.dcm",), StoreConfig(files=("a.dcm",)), ("--tls",)),
        Command(CatalogueOptions, CATALOGUE_FLAGS, (), CatalogueConfig()),
        Command(OrganizeOptions, ORGANIZE_FLAGS, (folder, "-o", "out"), OrganizeConfig(folder=folder, output_dir="out")),
    ]


class OneSourceOfDefaultsTests(SynchronousTestCase):
    """A default is written once, on its field: the command line takes it from there, for every command."""

    def test_nothing_given_is_the_configuration_s_defaults(self):
        """Every field of every part, parsed from no flag at all, is the field's own default."""
        for command in commands(self):
            self.assertEqual(command.parse(*command.least).config, command.config, command.options)

    def test_every_flag_sets_a_field_of_the_configuration(self):
        for command in commands(self):
            parts = parts_of(type(command.config))
            for flag in command.flags:
                if flag.part is None:
                    continue
                self.assertIn(flag.part, parts, flag.name)
                self.assertIn(flag.field, [each.name for each in dataclasses.fields(flag.part)], flag.name)

    def test_the_default_shown_is_the_field_s(self):
        """--help's default, given on the command line, is the field's declared default."""
        for command in commands(self):
            shown = command.options().defaults
            for flag in command.flags:
                if flag.switch:
                    self.assertIs(flag.default, False, flag.name)
                    continue
                if flag.repeatable:
                    # None shown: the help says what none given means.
                    self.assertNotIn(flag.name, shown)
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

    def test_no_flag_outside_the_table(self):
        """A command's flags are its table's, but --help, --version, and the SCP's --port (the same as PORT)."""
        for command in commands(self):
            own = {"help", "version"} | ({"port"} if command.options is ScpOptions else set())
            given = {name.rstrip("=") for name in command.options().longOpt}
            self.assertEqual(given - own, {flag.name for flag in command.flags}, command.options)

    def test_each_flag_reaches_its_field(self):
        """Each flag of a command's table is carried into the field it names."""
        for command in commands(self):
            for flag in command.flags:
                if flag.part is None:
                    continue
                options = command.parse(*command.whole)
                marker = object()
                options[flag.name] = [marker] if flag.repeatable else marker
                part = part_in(options.configuration(), flag.part)
                self.assertIsNotNone(part, flag.name)
                if flag.switch:
                    self.assertIs(getattr(part, flag.field), True, flag.name)
                elif flag.repeatable:
                    self.assertEqual(getattr(part, flag.field), flag.collect([marker]), flag.name)
                else:
                    self.assertIs(getattr(part, flag.field), marker, flag.name)

    def test_the_scp_s_repeatable_flags_are_in_its_table(self):
        self.assertEqual(
            {flag.name for flag in SCP_FLAGS if flag.repeatable},
            {"sop-class", "transfer-syntax", "allow-calling-aet", "allow-ip", "listen", "trusted-proxy"},
        )

    def test_shared_parts(self):
        """Flags that two commands share set one part of theirs: filing for scp and organize, the peer's for echo and store."""
        self.assertTrue(set(FILING_FLAGS) <= set(SCP_FLAGS) & set(ORGANIZE_FLAGS))
        self.assertTrue(set(CLIENT_FLAGS) <= set(ECHO_FLAGS) & set(STORE_FLAGS))
        layout = "{PatientID}/{SOPInstanceUID}.dcm"
        scp = parse("--layout", layout, "--on-duplicate", "keep").config.server.filing
        folder = self.mktemp()
        os.makedirs(folder)
        organize = OrganizeOptions()
        organize.parseOptions([folder, "-o", "out", "--layout", layout, "--on-duplicate", "keep"])
        for filing in (scp, organize.config.filing):
            self.assertEqual((filing.organize, filing.layout.template, filing.on_duplicate), (True, layout, "keep"))
        for options, arguments in ((EchoOptions(), ["pacs", "104"]), (StoreOptions(), ["a.dcm", "--host", "pacs", "--port", "104"])):
            options.parseOptions(arguments + ["--called-ae", "PACS", "--timeout", "5", "--tls-server-name", "pacs.example"])
            self.assertEqual(options.config.peer, Peer("pacs", 104, ClientTLS(server_name="pacs.example")))
            self.assertEqual(options.config.association, RequestorConfig(called_ae_title="PACS", timeout=5.0))


# A table of two repeatable flags, as a command would have.
@dataclass(frozen=True)
class Sample:
    names: tuple[str, ...] = ("ANY",)
    uids: frozenset[str] | None = None


class SampleOptions(CommandOptions):
    flags = (
        Flag("name", Sample, "names", "An AE title; repeat for several.", values.ae_title, repeatable=True),
        Flag("uid", Sample, "uids", "A UID; repeat for several.", values.uid, short="u", repeatable=True, collect=frozenset),
    )

    def configuration(self) -> Sample:
        return part_from(Sample, self.flags, self)


class RepeatableFlagTests(SynchronousTestCase):
    """A repeatable flag is one row of its command's table: parsed value by value, gathered into its field."""

    def parse(self, *arguments: str) -> Sample:
        options = SampleOptions()
        options.parseOptions(list(arguments))
        return options.configuration()

    def test_none_given_keeps_the_default(self):
        self.assertEqual(self.parse(), Sample())

    def test_each_value_kept_in_order(self):
        self.assertEqual(self.parse("--name", "B", "--name", " A ", "--uid", "1.2", "--uid", "1.3"), Sample(("B", "A"), frozenset({"1.2", "1.3"})))

    def test_each_value_parsed_and_its_error_named(self):
        with self.assertRaises(usage.UsageError) as raised:
            self.parse("--name", "A", "--name", "")
        self.assertEqual(str(raised.exception), "--name: an AE title must not be empty")
        with self.assertRaises(usage.UsageError) as raised:
            self.parse("--uid", "1..2")
        self.assertEqual(str(raised.exception), "--uid: '1..2' is not a valid UID")

    def test_help_is_the_row_s(self):
        shown = [line.split() for line in str(SampleOptions()).splitlines()]
        self.assertIn(["--name=", "An", "AE", "title;", "repeat", "for", "several."], shown)
        self.assertIn(["-u,", "--uid=", "A", "UID;", "repeat", "for", "several."], shown)


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
        """Every command line is parsed before the reactor loads, so each command can still leave TLS out."""
        folder = self.mktemp()
        os.makedirs(folder)
        for module, name, arguments in (
            ("radx.app.options", "ScpOptions", ["--threads", "2"]),
            ("radx.app.scu_cli", "EchoOptions", ["pacs", "--timeout", "5"]),
            ("radx.app.scu_cli", "StoreOptions", ["a.dcm", "--max-ops", "4"]),
            ("radx.app.catalogue_cli", "CatalogueOptions", ["-q", "Modality=CT"]),
            ("radx.app.organize_cli", "OrganizeOptions", [folder, "-o", "out"]),
        ):
            probe = (
                "import sys\n"
                f"from {module} import {name}\n"
                f"{name}().parseOptions({arguments!r})\n"
                "print(sorted(m for m in ('twisted.internet.tcp', 'twisted.internet.reactor', 'OpenSSL') if m in sys.modules))\n"
            )
            done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
            self.assertEqual((done.stdout.strip(), done.returncode), ("[]", 0), name + done.stderr)


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
