"""The results file of ``syncnet score``: CSV, JSON Lines or Parquet, one row per (video, engine), appended as
videos finish so that a killed run keeps what it finished.

CSV and JSON Lines are appended to and flushed after every video. Parquet cannot be appended to, so its rows go to
a journal beside it (``RESULTS.parquet.partial.jsonl``) as they finish, and the Parquet file is rewritten from the
rows it had plus the journal when the run ends (also after Ctrl-C); a run that was killed leaves the journal, and
the next run takes it in. A line cut short by a kill is dropped.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from syncnet.errors import BadArgument

# DESIGN.md's columns, in order, then the scoring protocol (the crop choice).
COLUMNS = (
    "path", "status", "error", "duration_s", "frames", "engine", "offset_frames", "offset_ms",
    "calibrated_offset_frames", "confidence", "min_dist", "verdict", "time_s", "protocol",
)
FLOAT_COLUMNS = frozenset(
    {"duration_s", "offset_ms", "calibrated_offset_frames", "confidence", "min_dist", "time_s"}
)
INT_COLUMNS = frozenset({"frames", "offset_frames"})
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
JOURNAL_SUFFIX = ".partial.jsonl"

Row = dict[str, Any]


def output_format(path: str | os.PathLike) -> str:
    """``csv``, ``jsonl`` or ``parquet`` from the file's extension; anything else is refused."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise BadArgument(f"--out must end in {', '.join(FORMATS)}: {os.fspath(path)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise BadArgument("Parquet output needs pyarrow (pip install 'fcn-syncnet[parquet]')") from None
    return fmt


def typed(row: Row) -> Row:
    """A row with every column, in order, numbers as numbers and empty cells as None (CSV cells are text)."""
    out: Row = {}
    for column in COLUMNS:
        value = row.get(column)
        if value is None or value == "":
            out[column] = None if column in FLOAT_COLUMNS or column in INT_COLUMNS else (value or "")
        elif column in FLOAT_COLUMNS:
            out[column] = float(value)
        elif column in INT_COLUMNS:
            out[column] = int(float(value))
        else:
            out[column] = str(value)
    return out


class ResultsFile:
    """Rows already in the file (read at open) and new rows appended as they come."""

    def __init__(self, path: str | os.PathLike, overwrite: bool = False):
        self.path = Path(path)
        self.format = output_format(self.path)
        self.journal = self.path.with_name(self.path.name + JOURNAL_SUFFIX) if self.format == "parquet" else None
        if overwrite:
            for stale in (self.path, self.journal):
                if stale is not None and stale.exists():
                    stale.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[Row] = self._read()
        self._stream = self._open_for_append(self.journal or self.path)

    def append(self, rows: Iterable[Row]) -> None:
        """Write the rows of one finished video and flush them to the operating system."""
        rows = [typed(r) for r in rows]
        if self.format == "csv":
            csv.DictWriter(self._stream, fieldnames=COLUMNS).writerows(rows)
        else:
            self._stream.writelines(json.dumps(r) + "\n" for r in rows)
        self._stream.flush()
        self.rows.extend(rows)

    def close(self) -> None:
        """Close the stream; for Parquet, write the file from all rows (atomically) and drop the journal."""
        self._stream.close()
        if self.format == "parquet":
            _write_parquet(self.path, self.rows)
            self.journal.unlink(missing_ok=True)

    def _read(self) -> list[Row]:
        if self.format == "parquet":
            rows = _read_parquet(self.path) if self.path.exists() else []
            return rows + _read_jsonl(self.journal)
        return _read_jsonl(self.path) if self.format == "jsonl" else _read_csv(self.path)

    def _open_for_append(self, path: Path):
        _drop_partial_line(path)
        is_new = not path.exists() or path.stat().st_size == 0
        stream = open(path, "a", newline="" if self.format == "csv" else None, encoding="utf-8")
        if self.format == "csv" and is_new:
            csv.DictWriter(stream, fieldnames=COLUMNS).writeheader()
            stream.flush()
        return stream


def _drop_partial_line(path: Path) -> None:
    """Cut a last line that a killed run left unfinished (no newline at its end)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _read_csv(path: Path) -> list[Row]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    _drop_partial_line(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise BadArgument(f"{path} has other columns than syncnet score writes; use --overwrite or another --out")
        return [typed(r) for r in reader]


def _read_jsonl(path: Path | None) -> list[Row]:
    if path is None or not path.exists():
        return []
    _drop_partial_line(path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(typed(json.loads(line)))
                except (ValueError, TypeError, AttributeError):
                    raise BadArgument(f"{path}:{number} is not a row syncnet score wrote; use --overwrite") from None
    return rows


def _schema():
    import pyarrow as pa

    def kind(column: str):
        return pa.float64() if column in FLOAT_COLUMNS else pa.int64() if column in INT_COLUMNS else pa.string()

    return pa.schema([(column, kind(column)) for column in COLUMNS])


def _write_parquet(path: Path, rows: list[Row]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    try:
        pq.write_table(pa.Table.from_pylist(rows, schema=_schema()), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise BadArgument(f"{path} cannot be read as Parquet ({error}); use --overwrite or another --out") from None
    if tuple(table.column_names) != COLUMNS:
        raise BadArgument(f"{path} has other columns than syncnet score writes; use --overwrite or another --out")
    return [typed(r) for r in table.to_pylist()]
