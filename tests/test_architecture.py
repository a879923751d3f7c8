"""The layering rules: the pure protocol code imports nothing from the reactor."""

from __future__ import annotations

import ast
import pathlib

from twisted.trial.unittest import SynchronousTestCase

import radx

ROOT = pathlib.Path(radx.__file__).parent
PURE_PACKAGES = ("ul", "dimse", "storage", "catalogue", "events")


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


class PurityTests(SynchronousTestCase):
    def test_pure_layers_do_not_import_twisted(self):
        offenders = []
        for package in PURE_PACKAGES:
            for path in sorted((ROOT / package).glob("*.py")):
                for name in imported_modules(path):
                    if name == "twisted" or name.startswith("twisted."):
                        offenders.append(f"{path.relative_to(ROOT)} imports {name}")
                    if name.startswith("radx.scp") or name.startswith("radx.app"):
                        offenders.append(f"{path.relative_to(ROOT)} imports {name}")
        self.assertEqual(offenders, [])

    def test_every_module_names_its_tests(self):
        """trial's test-case-name header, so `trial --testmodule` finds them."""
        missing = []
        for path in sorted(ROOT.rglob("*.py")):
            if path.name in ("__init__.py", "__main__.py", "_version.py", "testing.py", "uids.py"):
                continue
            first_line = path.read_text().splitlines()[0]
            if not first_line.startswith("# -*- test-case-name:"):
                missing.append(str(path.relative_to(ROOT)))
                continue
            # The named test modules exist.
            names = first_line.split("test-case-name:")[1].split("-*-")[0].strip()
            for name in names.split(","):
                if not (ROOT.parent / (name.strip().replace(".", "/") + ".py")).exists():
                    missing.append(f"{path.relative_to(ROOT)} names {name.strip()}, which does not exist")
        self.assertEqual(missing, [])


# PS3.4 B.2.3: C-STORE's failure and warning ranges.
_RANGES = ((0xA700, 0xA7FF), (0xA900, 0xA9FF), (0xB000, 0xBFFF), (0xC000, 0xCFFF))


def status_values(source: str) -> list[str]:
    """
    The integers of ``source`` written in hex that are DIMSE statuses radx
    answers with (those of L{Status} but Success), or lie in C-STORE's
    failure and warning ranges (PS3.4 B.2.3: A7xx, A9xx, Bxxx, Cxxx), as ``line: 0xNNNN``.
    """
    from radx.dimse.status import Status

    statuses = {int(status) for status in Status if status != Status.SUCCESS}
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Constant) or type(node.value) is not int:
            continue
        spelled = ast.get_source_segment(source, node) or ""
        value = node.value
        if spelled.lower().startswith("0x") and (value in statuses or any(low <= value <= high for low, high in _RANGES)):
            found.append(f"{node.lineno}: {spelled}")
    return found


class StorageKnowsNoStatusTests(SynchronousTestCase):
    """
    radx.storage says why an instance was not stored in its own words
    (radx.storage.errors); which DIMSE status a peer is answered is the
    service layer's decision (radx.dimse.service), made in one table.
    """

    def test_storage_imports_nothing_of_dimse(self):
        offenders = []
        for path in sorted((ROOT / "storage").glob("*.py")):
            for name in imported_modules(path):
                if name.startswith(("radx.dimse", "radx.ul")):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
        self.assertEqual(offenders, [])

    def test_storage_holds_no_status(self):
        offenders = []
        for path in sorted((ROOT / "storage").glob("*.py")):
            offenders += [f"{path.relative_to(ROOT)}:{where}" for where in status_values(path.read_text())]
        self.assertEqual(offenders, [])

    def test_a_status_in_storage_would_be_found(self):
        """The rule catches what storage once held: statuses as constants, and an error carrying one."""
        source = (
            "OUT_OF_RESOURCES = 0xA700\n"
            "DUPLICATE_SOP_INSTANCE = 0x0111\n"
            "raise StorageError(0xC000, 'why')\n"
            "TAG = 0x00080018\n"
            "LENGTH = 0xFFFFFFFF\n"
            "BOUND = 1 << 20\n"
        )
        self.assertEqual(status_values(source), ["1: 0xA700", "2: 0x0111", "3: 0xC000"])


class OneBaseTests(SynchronousTestCase):
    """Both roles' protocols are thin: they share one Twisted base over the pure machine."""

    def test_both_roles_share_the_base(self):
        from radx.association import AssociationBase
        from radx.scp.protocol import AssociationProtocol
        from radx.scu.association import RequestorProtocol

        self.assertTrue(issubclass(AssociationProtocol, AssociationBase))
        self.assertTrue(issubclass(RequestorProtocol, AssociationBase))

    def test_the_base_lives_outside_the_pure_packages(self):
        """Nothing in a pure package writes to a transport: the effects are carried out above them."""
        for package in PURE_PACKAGES:
            for path in sorted((ROOT / package).glob("*.py")):
                self.assertNotIn("transport.write", path.read_text(), str(path))

    def test_protocol_classes_stay_small(self):
        """What differs between the roles, and only that: each class under 300 lines."""
        for module, name in (("scp/protocol.py", "AssociationProtocol"), ("scu/association.py", "RequestorProtocol")):
            tree = ast.parse((ROOT / module).read_text())
            [node] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
            self.assertLess(node.end_lineno - node.lineno + 1, 300, name)


# The modules that read parsed options by name: the SCP's parsing, and
# where parsed options become a typed configuration, once. Each command's
# options class reads its own values as it checks them (``self[...]``);
# past parsing, every command reads its configuration's typed fields.
OPTIONS_READERS = {
    "app/options.py": "ScpOptions parses and checks the SCP's flags",
    "app/config.py": "config_from_options and part_from turn them into a typed configuration, once",
}


def options_read_by_name(source: str, name: str) -> list[str]:
    """Where a module reads something called options (``options[...]``, ``self.options.get(...)``) by a string key."""

    def is_options(node) -> bool:
        return (isinstance(node, ast.Name) and node.id in ("options", "opts")) or (
            isinstance(node, ast.Attribute) and node.attr in ("options", "parent")
        )

    found = []
    for node in ast.walk(ast.parse(source, name)):
        key = None
        if isinstance(node, ast.Subscript) and is_options(node.value):
            key = node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            if is_options(node.func.value) and node.args:
                key = node.args[0]
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            found.append(f"{name}:{node.lineno} reads {key.value!r}")
    return found


class ConfigurationTests(SynchronousTestCase):
    """Every command's flags are read by name while they are parsed; past that, everything takes typed fields."""

    def test_nothing_past_parsing_reads_options_by_name(self):
        offenders = []
        for path in sorted(ROOT.rglob("*.py")):
            name = str(path.relative_to(ROOT))
            if name not in OPTIONS_READERS:
                offenders += options_read_by_name(path.read_text(), name)
        self.assertEqual(offenders, [])

    def test_the_guard_sees_a_read(self):
        """What the test above looks for, it finds."""
        source = (
            "def listen(self, options):\n"
            "    return self.options['bind'], options.get('http'), self.options.parent.get('syslog'), options[name]\n"
        )
        self.assertEqual(
            options_read_by_name(source, "tap.py"),
            ["tap.py:2 reads 'bind'", "tap.py:2 reads 'http'", "tap.py:2 reads 'syslog'"],
        )

    def test_the_server_does_not_import_the_command_line(self):
        """radx.scp takes its configuration (radx.scp.config) from whoever starts it, never from radx.app."""
        offenders = [
            f"{path.relative_to(ROOT)} imports {name}"
            for path in sorted((ROOT / "scp").glob("*.py"))
            for name in imported_modules(path)
            if name.startswith("radx.app")
        ]
        self.assertEqual(offenders, [])
