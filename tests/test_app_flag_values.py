"""Tests for radx.app.flag_values: the parsers of every command's flags, their errors in words."""

from __future__ import annotations

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from radx.app import flag_values as values


class ParserTests(SynchronousTestCase):
    def refused(self, parse, text: str) -> str:
        with self.assertRaises(ValueError) as caught:
            parse(text)
        return str(caught.exception)

    def test_boolean(self):
        self.assertEqual([values.boolean(t) for t in ("true", "Yes", " on ", "1", "false", "NO", "off", "0")], [True] * 4 + [False] * 4)
        self.assertEqual(self.refused(values.boolean, "maybe"), "expected true or false, not 'maybe'")

    def test_numbers(self):
        self.assertEqual((values.integer("12"), values.positive_int("1"), values.seconds("0.5")), (12, 1, 0.5))
        self.assertEqual(self.refused(values.integer, "1.5"), "'1.5' is not a whole number")
        self.assertEqual(self.refused(values.positive_int, "0"), "must be at least 1, not 0")
        self.assertEqual(self.refused(values.seconds, "0"), "must be a positive number of seconds, not 0")
        self.assertEqual(self.refused(values.seconds, "soon"), "'soon' is not a number of seconds")

    def test_port(self):
        self.assertEqual((values.port("0"), values.port("65535")), (0, 65535))
        self.assertEqual(self.refused(values.port, "65536"), "a port is 0 to 65535, not 65536")

    def test_pdu_length(self):
        self.assertEqual(values.pdu_length(str(values.MINIMUM_PDU)), values.MINIMUM_PDU)
        self.assertEqual(values.pdu_length(str(values.MAXIMUM_PDU)), values.MAXIMUM_PDU)
        self.assertEqual(self.refused(values.pdu_length, "4095"), "must be between 4096 and 4194304 bytes, not 4095")

    def test_ae_title(self):
        self.assertEqual(values.ae_title("  PACS "), "PACS")
        self.assertEqual(self.refused(values.ae_title, "   "), "an AE title must not be empty")
        self.assertIn("at most 16 characters", self.refused(values.ae_title, "A" * 17))
        self.assertIn("without backslash", self.refused(values.ae_title, "A\\B"))

    def test_mode_and_octal(self):
        self.assertEqual((values.mode("0640"), values.mode("750"), values.mode(0o600)), (0o640, 0o750, 0o600))
        self.assertEqual((values.octal(0o600), values.octal(0o2750)), ("0600", "2750"))
        self.assertEqual(values.mode(values.octal(0o640)), 0o640)
        self.assertIn("octal permission bits", self.refused(values.mode, "0800"))
        self.assertIn("octal permission bits", self.refused(values.mode, "17777"))

    def test_size(self):
        self.assertEqual([values.size(t) for t in ("0", "4096", "500MB", "1GiB", "1.5G", "2 kib")], [0, 4096, 500_000_000, 1 << 30, 1_500_000_000, 2048])
        self.assertEqual(self.refused(values.size, "-1"), "expected a size such as 0, 500MB or 1GiB, not '-1'")

    def test_network(self):
        self.assertEqual(values.network(" 10.0.0.0/8 "), ipaddress.ip_network("10.0.0.0/8"))
        self.assertEqual(values.network("::1"), ipaddress.ip_network("::1/128"))
        self.assertIn("is not an IPv4 or IPv6 address or CIDR network", self.refused(values.network, "10.0.0.1/8"))

    def test_on_duplicate(self):
        self.assertEqual(values.on_duplicate("keep"), "keep")
        self.assertEqual(self.refused(values.on_duplicate, "skip"), "expected one of replace, keep, unique, reject, not 'skip'")

    def test_count(self):
        self.assertEqual((values.count("1"), values.count("65535")), (1, 65535))
        self.assertEqual(self.refused(values.count, "0"), "must be at least 1, not 0")
        self.assertEqual(self.refused(values.count, "65536"), "at most 65535, not 65536")

    def test_uid(self):
        self.assertEqual(values.uid("1.2.840.10008.1.2"), "1.2.840.10008.1.2")
        for text in ("", "1..2", "x", "1" * 65):
            self.assertEqual(self.refused(values.uid, text), f"{text!r} is not a valid UID")

    def test_storage_sop_class(self):
        """PS3.4 B.5: a Storage SOP Class; Verification and other services' classes are not."""
        ct = "1.2.840.10008.5.1.4.1.1.2"
        self.assertEqual(values.storage_sop_class(ct), ct)
        self.assertEqual(self.refused(values.storage_sop_class, "1..2"), "'1..2' is not a valid UID")
        self.assertEqual(self.refused(values.storage_sop_class, "1.2.840.10008.1.1"), "Verification is governed by --accept-echo")
        find = "1.2.840.10008.5.1.4.1.2.1.1"
        self.assertEqual(self.refused(values.storage_sop_class, find), f"{find} is not a Storage SOP Class; radx is a Storage SCP")

    def test_endpoint(self):
        self.assertEqual(values.endpoint(" tcp:11112 "), "tcp:11112")
        self.assertEqual(self.refused(values.endpoint, "  "), "an endpoint such as tcp:11112, not an empty string")

    def test_named(self):
        """The flag's name before the parser's words; Twisted's --help line keeps the parser's own."""
        parse = values.named("max-conns", values.positive_int)
        self.assertEqual(parse("3"), 3)
        self.assertEqual(self.refused(parse, "0"), "--max-conns: must be at least 1, not 0")
        self.assertEqual(values.named("fsync", values.boolean).coerceDoc, "true or false.")
