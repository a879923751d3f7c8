# -*- test-case-name: tests.test_catalogue_query -*-
"""`-q FIELD=VALUE` and bare words, turned into a portable SQL condition with parameters."""

from __future__ import annotations

from radx.catalogue.schema import COLUMNS, INTEGER_COLUMNS, SEARCHED, field_column

# The columns a query's table shows.
SHOWN = (
    "patient_name",
    "patient_id",
    "study_date",
    "modality",
    "series_number",
    "instance_number",
    "file_path",
)


class QueryError(ValueError):
    """A query term that names no column, or a value its column cannot hold."""


def _like(text: str) -> str:
    """A LIKE pattern of ``text``: ``*`` and ``?`` are its wildcards, ``%`` and ``_`` themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def condition(terms: list[str], placeholder: str = "?") -> tuple[str, list]:
    """
    The SQL condition under which a row matches every term, and its parameters.

    ``FIELD=VALUE``: FIELD a DICOM keyword (``PatientID``) or a column
    (``patient_id``), in any case; VALUE matched exactly, or as a pattern
    when it holds ``*`` or ``?``; an empty VALUE matches a missing one.
    A bare word: found, whatever its case, in any of schema.SEARCHED.

    @raise QueryError: a FIELD that names nothing, a number that is not one.
    """
    p = placeholder
    clauses = []
    parameters: list = []
    for term in terms:
        if "=" not in term:
            word = term.strip()
            if not word:
                continue
            clauses.append("(" + " OR ".join(f"LOWER({c}) LIKE LOWER({p}) ESCAPE '\\'" for c in SEARCHED) + ")")
            parameters += [f"%{_like(word)}%"] * len(SEARCHED)
            continue
        field, value = term.split("=", 1)
        column = field_column(field)
        if column is None:
            raise QueryError(
                f"-q: unknown field {field!r}; use a DICOM keyword such as PatientID or a column: {', '.join(COLUMNS)}"
            )
        if value == "":
            clauses.append(f"{column} IS NULL")
        elif column in INTEGER_COLUMNS:
            try:
                number = int(value)
            except ValueError:
                raise QueryError(f"-q: {field} is a number, not {value!r}") from None
            clauses.append(f"{column} = {p}")
            parameters.append(number)
        elif "*" in value or "?" in value:
            clauses.append(f"{column} LIKE {p} ESCAPE '\\'")
            parameters.append(_like(value))
        else:
            clauses.append(f"{column} = {p}")
            parameters.append(value)
    return " AND ".join(clauses), parameters
