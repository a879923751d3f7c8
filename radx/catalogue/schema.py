# -*- test-case-name: tests.test_catalogue_database,tests.test_catalogue_query -*-
"""The catalogue's table: its columns, the DICOM attributes they hold, and its portable SQL."""

from __future__ import annotations

from dataclasses import dataclass

TABLE = "dicom_metadata"


@dataclass(frozen=True)
class Attribute:
    """A column read from the data set: its DICOM keyword, tag and VR (PS3.6)."""

    column: str
    keyword: str
    tag: int
    vr: str


# The columns read from the data set, in the table's order (PS3.6 Table 6-1).
ATTRIBUTES = (
    Attribute("patient_name", "PatientName", 0x00100010, "PN"),
    Attribute("patient_id", "PatientID", 0x00100020, "LO"),
    Attribute("patient_birth_date", "PatientBirthDate", 0x00100030, "DA"),
    Attribute("patient_sex", "PatientSex", 0x00100040, "CS"),
    Attribute("study_instance_uid", "StudyInstanceUID", 0x0020000D, "UI"),
    Attribute("study_date", "StudyDate", 0x00080020, "DA"),
    Attribute("study_description", "StudyDescription", 0x00081030, "LO"),
    Attribute("series_instance_uid", "SeriesInstanceUID", 0x0020000E, "UI"),
    Attribute("series_number", "SeriesNumber", 0x00200011, "IS"),
    Attribute("series_description", "SeriesDescription", 0x0008103E, "LO"),
    Attribute("sop_instance_uid", "SOPInstanceUID", 0x00080018, "UI"),
    Attribute("sop_class_uid", "SOPClassUID", 0x00080016, "UI"),
    Attribute("instance_number", "InstanceNumber", 0x00200013, "IS"),
    Attribute("modality", "Modality", 0x00080060, "CS"),
    Attribute("manufacturer", "Manufacturer", 0x00080070, "LO"),
    Attribute("institution_name", "InstitutionName", 0x00080080, "LO"),
    Attribute("accession_number", "AccessionNumber", 0x00080050, "SH"),
    Attribute("referring_physician_name", "ReferringPhysicianName", 0x00080090, "PN"),
    Attribute("performing_physician_name", "PerformingPhysicianName", 0x00081050, "PN"),
)

# (0008,0005) Specific Character Set: how the data set's text is encoded.
SPECIFIC_CHARACTER_SET = 0x00080005

# The columns about the file and how it came, after the data set's; the
# transfer syntax is the file meta's (0002,0010). received_at,
# calling_ae_title and peer are known only for what the server received.
FILE_COLUMNS = (
    "file_path",
    "file_name",
    "file_size",
    "indexed_at",
    "transfer_syntax_uid",
    "received_at",
    "calling_ae_title",
    "peer",
    "file_mtime",
)

COLUMNS = tuple(a.column for a in ATTRIBUTES) + FILE_COLUMNS

# The column that says which machine stored a file, in a catalogue that
# several share (PostgreSQL): a file's path is unique on one machine
# only. A SQLite catalogue is one machine's, and has no such column.
NODE = "node"

_TYPES = {"series_number": "INTEGER", "instance_number": "INTEGER", "file_size": "BIGINT", "file_mtime": "BIGINT"}

# Columns with an index of their own: what queries select by.
INDEXED = ("patient_id", "modality", "study_instance_uid", "series_instance_uid", "sop_instance_uid")


def column_type(column: str) -> str:
    """A column's SQL type; file_path's constraints are create_statements' business."""
    return _TYPES.get(column, "TEXT")


def create_statements(id_column: str, path_type: str | None = None, key: tuple = ("file_path",)) -> list[str]:
    """
    The table and its indexes, given the dialect's spelling of an identity
    key column and, if not plain TEXT, of file_path's type; ``key``, the
    columns that name a file: file_path alone, or (node, file_path), the
    node column then the table's last.
    """
    definitions = [id_column]
    for c in COLUMNS:
        if c == "file_path":
            definitions.append(f"{c} {path_type or 'TEXT'} NOT NULL" + ("" if len(key) > 1 else " UNIQUE"))
        else:
            definitions.append(f"{c} {column_type(c)}")
    if NODE in key:
        definitions.append(f"{NODE} TEXT NOT NULL")
    if len(key) > 1:
        definitions.append(f"UNIQUE ({', '.join(key)})")
    columns = ",\n    ".join(definitions)
    statements = [f"CREATE TABLE IF NOT EXISTS {TABLE} (\n    {columns}\n)"]
    statements += [f"CREATE INDEX IF NOT EXISTS idx_{TABLE}_{c} ON {TABLE} ({c})" for c in INDEXED]
    return statements


def upsert_statement(placeholder: str, key: tuple = ("file_path",)) -> str:
    """
    Insert a row, or replace the row of the same ``key`` (SQLite 3.24+ and
    PostgreSQL 9.5+ spell it alike); its values: COLUMNS, then the key's
    columns not among them.
    """
    columns = COLUMNS + tuple(c for c in key if c not in COLUMNS)
    names = ", ".join(columns)
    values = ", ".join([placeholder] * len(columns))
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return f"INSERT INTO {TABLE} ({names}) VALUES ({values}) ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"


# FIELD of `-q FIELD=VALUE`, case aside: a DICOM keyword or a column name.
_FIELDS = {a.keyword.lower(): a.column for a in ATTRIBUTES}
_FIELDS.update({c: c for c in COLUMNS + (NODE,)})
_FIELDS.update({"transfersyntaxuid": "transfer_syntax_uid", "callingaetitle": "calling_ae_title"})


def field_column(field: str) -> str | None:
    """The column a query's FIELD names, or None."""
    return _FIELDS.get(field.strip().lower())


# What a bare word of a query searches.
SEARCHED = (
    "patient_name",
    "patient_id",
    "study_description",
    "series_description",
    "modality",
    "manufacturer",
    "institution_name",
)

INTEGER_COLUMNS = frozenset(c for c in COLUMNS if column_type(c) in ("INTEGER", "BIGINT"))
