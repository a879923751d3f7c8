"""Tests for radx.catalogue.query: -q terms as SQL conditions, run on a real catalogue."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from radx.catalogue.query import QueryError, condition
from radx.catalogue.sqlite import SQLiteCatalogue

ROWS = [
    {"file_path": "/1", "patient_name": "DOE^JANE", "patient_id": "P1", "modality": "CT", "series_number": 1,
     "study_description": "Chest CT", "institution_name": "General Hospital"},
    {"file_path": "/2", "patient_name": "DOE^JOHN", "patient_id": "P2", "modality": "MR", "series_number": 2,
     "manufacturer": "ACME 100%_"},
    {"file_path": "/3", "patient_name": "Müller^Zoë", "patient_id": "P3", "modality": "CT", "series_number": 10},
]  # fmt: skip


class ConditionTests(SynchronousTestCase):
    def setUp(self):
        path = self.mktemp()
        SQLiteCatalogue.open(path).record_many(ROWS)
        self.catalogue = SQLiteCatalogue.open_read_only(path)
        self.addCleanup(self.catalogue.close)

    def matching(self, *terms: str) -> list[str]:
        where, parameters = condition(list(terms))
        return [r[0] for r in self.catalogue.select(["file_path"], where, parameters, 100).rows]

    def test_keyword(self):
        self.assertEqual(self.matching("PatientID=P2"), ["/2"])
        self.assertEqual(self.matching("Modality=CT"), ["/1", "/3"])

    def test_column(self):
        self.assertEqual(self.matching("patient_id=P3"), ["/3"])

    def test_field_in_any_case(self):
        self.assertEqual(self.matching("patientid=P1"), ["/1"])

    def test_all_must_hold(self):
        self.assertEqual(self.matching("Modality=CT", "PatientID=P3"), ["/3"])

    def test_exact(self):
        self.assertEqual(self.matching("PatientName=DOE"), [])
        self.assertEqual(self.matching("PatientName=DOE^JANE"), ["/1"])

    def test_wildcards(self):
        self.assertEqual(self.matching("PatientName=DOE^*"), ["/1", "/2"])
        self.assertEqual(self.matching("PatientName=DOE^J?HN"), ["/2"])

    def test_percent_and_underscore_are_themselves(self):
        self.assertEqual(self.matching("Manufacturer=*100%_"), ["/2"])
        self.assertEqual(self.matching("PatientID=P_"), [])

    def test_number(self):
        self.assertEqual(self.matching("SeriesNumber=10"), ["/3"])
        self.assertRaises(QueryError, condition, ["SeriesNumber=ten"])

    def test_empty_value_is_missing(self):
        self.assertEqual(self.matching("Manufacturer="), ["/1", "/3"])

    def test_bare_word(self):
        self.assertEqual(self.matching("doe"), ["/1", "/2"])
        self.assertEqual(self.matching("chest"), ["/1"])  # study description
        self.assertEqual(self.matching("general"), ["/1"])  # institution
        self.assertEqual(self.matching("acme"), ["/2"])  # manufacturer
        self.assertEqual(self.matching("mr"), ["/2"])  # modality
        self.assertEqual(self.matching("Müller"), ["/3"])
        self.assertEqual(self.matching("doe", "Modality=MR"), ["/2"])

    def test_unknown_field(self):
        with self.assertRaises(QueryError) as caught:
            condition(["Nothing=1"])
        self.assertIn("unknown field 'Nothing'", str(caught.exception))

    def test_no_terms(self):
        self.assertEqual(condition([]), ("", []))
        self.assertEqual(self.matching(), ["/1", "/2", "/3"])

    def test_placeholder(self):
        where, parameters = condition(["PatientID=P1", "doe"], placeholder="%s")
        self.assertNotIn("?", where)
        self.assertEqual(where.count("%s"), len(parameters))
