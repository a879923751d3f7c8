"""A hook's command: split once, placeholders filled inside single arguments, never a shell."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from radx.events.command import CommandError, HookCommand, find_program, hook_values, parse_command

INSTANCE = {
    "time": 1.5,
    "path": "/out/1.2.3/1.2.3.4/1.2.3.4.5.dcm",
    "StudyInstanceUID": "1.2.3",
    "SeriesInstanceUID": "1.2.3.4",
    "SOPInstanceUID": "1.2.3.4.5",
    "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
    "TransferSyntaxUID": "1.2.840.10008.1.2.1",
    "calling_ae_title": "MODALITY",
    "called_ae_title": "RADX-SCP",
    "remote": "127.0.0.1",
}

# What a peer can put in an AE title (printable ASCII but backslash) or, unchecked, in a Study or Series UID.
HOSTILE = [
    "; rm -rf /",
    "$(touch pwned)",
    "`touch pwned`",
    "'\"",
    "a b\tc",
    "x\ny; id",
    "#p #{id}",
    "&& reboot",
    "|cat",
    "*",
    "~root",
    "--option",
]


class ParseTests(SynchronousTestCase):
    def test_split_as_words_once(self):
        """Quotes group words as a shell would; nothing else of a shell happens."""
        command = parse_command("store", "forward --to 'PACS A' \"#p/x y\" $HOME *")
        self.assertEqual(command.arguments({"folder": "/f"}), ["forward", "--to", "PACS A", "/f/x y", "$HOME", "*"])

    def test_dcmtk_placeholders(self):
        command = parse_command("store", "prog #p #f #a #c #r")
        values = hook_values("store", INSTANCE, 1, "ID", organize=True)
        self.assertEqual(
            command.arguments(values),
            ["prog", "/out/1.2.3/1.2.3.4", "1.2.3.4.5.dcm", "MODALITY", "RADX-SCP", "127.0.0.1"],
        )

    def test_named_placeholders(self):
        command = parse_command(
            "store",
            "prog #{StudyInstanceUID} #{SeriesInstanceUID} #{SOPInstanceUID} #{SOPClassUID}"
            " #{TransferSyntaxUID} #{count} #{path} #{folder} #{id} #{kind} uid=#{SOPInstanceUID}; ##",
        )
        values = hook_values("store", INSTANCE, 1, "ID", organize=True)
        self.assertEqual(
            command.arguments(values)[1:],
            ["1.2.3", "1.2.3.4", "1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1", "1",
             INSTANCE["path"], "/out/1.2.3/1.2.3.4", "ID", "store", "uid=1.2.3.4.5;", "#"],
        )

    def test_study_folder(self):
        """#p of a study is its folder; of a series, the series' folder; flat, the output folder."""
        study = parse_command("study", "prog #p #{count}")
        series = parse_command("series", "prog #p")
        self.assertEqual(study.arguments(hook_values("study", INSTANCE, 7, "I", True)), ["prog", "/out/1.2.3", "7"])
        self.assertEqual(series.arguments(hook_values("series", INSTANCE, 7, "I", True)), ["prog", "/out/1.2.3/1.2.3.4"])
        flat = dict(INSTANCE, path="/out/1.2.3.4.5.dcm")
        self.assertEqual(study.arguments(hook_values("study", flat, 7, "I", False)), ["prog", "/out", "7"])

    def test_hostile_values_stay_one_argument(self):
        """Whatever a value holds, an argument stays one argument, byte for byte; no placeholder inside a value is read."""
        command = parse_command("store", "prog #a x#{StudyInstanceUID}y #{SeriesInstanceUID}")
        for value in HOSTILE:
            values = hook_values("store", dict(INSTANCE, calling_ae_title=value, StudyInstanceUID=value, SeriesInstanceUID=value), 1, "I", True)
            self.assertEqual(command.arguments(values), ["prog", value, f"x{value}y", value])

    def test_nul_in_a_value_is_dropped(self):
        """An argument cannot hold NUL: a value's NULs are left out, not an error."""
        command = parse_command("store", "prog #{StudyInstanceUID}")
        self.assertEqual(command.arguments({"StudyInstanceUID": "1.2\x00.3\x00"}), ["prog", "1.2.3"])

    def test_unknown_placeholder_refused(self):
        error = self.assertRaises(CommandError, parse_command, "store", "prog #{PatientName}")
        self.assertIn("#{PatientName}", str(error))

    def test_meaningless_for_kind_refused(self):
        """A study has many series and instances: #f, #{SOPInstanceUID}, #{SeriesInstanceUID} have no one value."""
        for text in ("prog #f", "prog #{SOPInstanceUID}", "prog #{SeriesInstanceUID}", "prog #{path}"):
            self.assertRaises(CommandError, parse_command, "study", text)
        self.assertRaises(CommandError, parse_command, "series", "prog #f")
        parse_command("series", "prog #{SeriesInstanceUID}")

    def test_placeholder_in_program_refused(self):
        self.assertRaises(CommandError, parse_command, "store", "#p/run")

    def test_unbalanced_quote_and_empty_refused(self):
        self.assertRaises(CommandError, parse_command, "store", "prog 'open")
        self.assertRaises(CommandError, parse_command, "store", "   ")

    def test_other_hash_left_as_is(self):
        """#x that is not a placeholder is text, as in DCMTK."""
        command = parse_command("store", "prog #x a#b #")
        self.assertEqual(command.arguments({}), ["prog", "#x", "a#b", "#"])

    def test_find_program(self):
        self.assertEqual(find_program(parse_command("store", "true")), __import__("shutil").which("true"))
        self.assertRaises(CommandError, find_program, parse_command("store", "no-such-program-radx"))
        self.assertRaises(CommandError, find_program, parse_command("store", "/nonexistent/prog"))
        self.assertRaises(CommandError, find_program, parse_command("store", os.devnull))

    def test_is_data(self):
        self.assertIsInstance(parse_command("store", "prog"), HookCommand)
