"""Legacy file imports: CSV files into the touchpoint inbox, streaming, with the source's mappings.

A file is read row by row and sent through ``touchpoint_batch_receive`` in
chunks of 1,000 rows (origin FILE), so a file of a million rows never holds
more than one chunk in memory, and every row is checked by the same intake as
a result POSTed by the source. Each chunk commits together with the job's
progress and the rows it refused, so a job that a lost worker left behind
resumes after its last stored chunk without counting a row twice; and the
inbox is unique per source and external id, so importing the same file again
stores nothing new.

Which column is what comes from the source's field mappings of the file's
record kind: the column mapped to ``interaction.external_id`` is the row's
external id (otherwise ``<file name>:<line>:<digest of the row>``, stable for
the same file, distinct for a different file under the same name); the column
mapped to ``interaction.occurred_at`` orders a customer's rows; the customer
key is what intake reads from ``customer.external_key``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import logging
import os
import socket
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, reset_queries, transaction
from django.db.models import F, Q
from django.utils import timezone

from crm.models import (
    FieldMapping,
    FileImport,
    ImportFile,
    ImportRejection,
    ImportStatus,
    SourceSystem,
    User,
)
from crm.models.choices import BatchOrigin, RecordKind
from crm.services.touchpoints import MAX_BATCH_ITEMS, touchpoint_batch_receive

logger = logging.getLogger(__name__)

CHUNK_ROWS = MAX_BATCH_ITEMS
SNIFF_BYTES = 32 * 1024
DELIMITERS = ",;\t|"
# Files of one import are read customers first, then accounts, then the rest:
# a history row then finds the customer its profile row created.
KIND_ORDER: dict[str, int] = {RecordKind.CUSTOMER.value: 0, RecordKind.ACCOUNT.value: 1}
ENCODING_HINT = "save it as UTF-8 (in Excel: “CSV UTF-8”)"


class ImportTakenOver(Exception):
    """Another worker holds the job now (this one was too slow); stop without writing."""


class ImportFileError(Exception):
    """A file cannot be read on (gone, not UTF-8, broken quoting): the job stops with this message."""


# --- Which column is what --------------------------------------------------------------------


@dataclass(frozen=True)
class KindColumns:
    """The columns of one record kind's files, as the source's mappings name them."""

    mapped: tuple[str, ...]
    required: tuple[tuple[str, str], ...]  # (column, target)
    external_id: str | None
    occurred_at: str | None


def import_columns(*, source: SourceSystem, record_kind: str) -> KindColumns:
    mappings = list(
        FieldMapping.objects.filter(source_system=source, record_kind=record_kind).order_by("position", "id")
    )
    by_target = {m.target: m.source_field for m in mappings}
    return KindColumns(
        mapped=tuple(m.source_field for m in mappings),
        required=tuple((m.source_field, m.target) for m in mappings if m.required),
        external_id=by_target.get("interaction.external_id"),
        occurred_at=by_target.get("interaction.occurred_at"),
    )


def import_header_check(*, source: SourceSystem, record_kind: str, header: list[str], file_name: str) -> None:
    """Refuse a header that lacks a column a required mapping reads, or that
    none of the kind's mappings read (the wrong file, or the wrong kind)."""
    kind_label = RecordKind(record_kind).label if record_kind in RecordKind.values else record_kind
    columns = import_columns(source=source, record_kind=record_kind)
    if not columns.mapped:
        raise ValidationError(
            {"record_kind": f"{source.name} has no field mappings for {kind_label} records: map its "
                            "columns first (admin, Source systems, Field mappings)."}
        )  # fmt: skip
    present = {h.strip() for h in header}
    missing = [(column, target) for column, target in columns.required if column not in present]
    if missing:
        named = "; ".join(f"“{c}” (mapped to {t}, required)" for c, t in missing)
        raise ValidationError(
            {"file": f"{file_name}: the header row has no column {named}. Add the column to the file, or "
                     f"change {source.name}'s {kind_label} mappings. The header has: {', '.join(header)}."}
        )  # fmt: skip
    if not present & set(columns.mapped):
        raise ValidationError(
            {"file": f"{file_name}: none of its columns ({', '.join(header)}) is mapped for {kind_label} "
                     f"records of {source.name}, which read {', '.join(columns.mapped)}. Is this the "
                     "right file and record kind?"}
        )  # fmt: skip


# --- Reading a CSV file as a stream ------------------------------------------------------------


def csv_dialect(text: str) -> type[csv.Dialect]:
    """Excel's CSV with the delimiter guessed from the first lines of ``text``.
    Only the delimiter is taken from the guess: exports quote with double
    quotes, and a guessed apostrophe would split names like O'Brien."""
    first_lines = "\n".join(text.splitlines()[:50])
    try:
        delimiter = csv.Sniffer().sniff(first_lines, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return csv.excel  # one column, or too little to tell: commas
    return type("SniffedCsv", (csv.excel,), {"delimiter": delimiter})


@dataclass
class Row:
    line: int  # where the row starts in the file (the header is line 1)
    values: dict[str, str] | None  # None: the row itself is malformed
    problem: str = ""


class CsvStream:
    """A CSV file read row by row: UTF-8 (a byte-order mark is skipped), the
    delimiter guessed from its first 32 KB, the first row its header.

    ``bytes_read`` is how far the file has been read (ahead of the rows by at
    most the text buffer), for progress."""

    def __init__(self, path: str | Path, *, name: str = "") -> None:
        self.name = name or Path(path).name
        try:
            self._raw: BinaryIO = open(path, "rb")
        except FileNotFoundError:
            raise ImportFileError(f"{self.name} is gone from {Path(path).parent}: upload it again.") from None
        sample = self._raw.read(SNIFF_BYTES)
        self._raw.seek(0)
        if b"\x00" in sample:
            self.close()
            raise ImportFileError(f"{self.name} is not a CSV text file (it holds binary data): export "
                                  f"the data as CSV and {ENCODING_HINT}.")  # fmt: skip
        try:
            text = sample.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            if exc.start < len(sample) - 4:  # not just a character cut at the sample's end
                self.close()
                raise ImportFileError(f"{self.name} is not UTF-8 text: {ENCODING_HINT}.") from None
            text = sample[: exc.start].decode("utf-8-sig")
        self.dialect = self._sniff(text)
        self._text = io.TextIOWrapper(self._raw, encoding="utf-8-sig", newline="")  # type: ignore[arg-type]
        self._reader = csv.reader(self._text, self.dialect)
        try:
            header = next(self._reader)
        except StopIteration:
            self.close()
            raise ImportFileError(f"{self.name} is empty: the first row must name the columns.") from None
        self.header = [h.strip() for h in header]
        if not any(self.header):
            self.close()
            raise ImportFileError(f"{self.name}: the first row is empty; it must name the columns.")
        twice = sorted({h for h in self.header if h and self.header.count(h) > 1})
        if twice:
            self.close()
            raise ImportFileError(f"{self.name}: the header names {', '.join(twice)} more than once; "
                                  "give each column its own name.")  # fmt: skip

    @staticmethod
    def _sniff(text: str) -> type[csv.Dialect]:
        return csv_dialect(text)

    @property
    def bytes_read(self) -> int:
        return self._raw.tell() if not self._raw.closed else 0

    def rows(self) -> Iterator[Row]:
        width = len(self.header)
        end = self._reader.line_num
        while True:
            start = end + 1
            try:
                values = next(self._reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise ImportFileError(
                    f"{self.name}: the text after line {end} is not UTF-8: {ENCODING_HINT}, then import it "
                    "again (the rows before it are stored)."
                ) from None
            except csv.Error as exc:
                raise ImportFileError(
                    f"{self.name}, line {start}: the file cannot be read on ({exc}); check the quotes "
                    "there, then import it again (the rows before it are stored)."
                ) from None
            end = self._reader.line_num
            if not values or not any(v.strip() for v in values):
                continue  # blank lines carry nothing
            if len(values) != width:
                yield Row(start, None, f"{len(values)} values where the header has {width} columns: "
                                       "check the delimiters and quotes on this line.")  # fmt: skip
                continue
            yield Row(start, dict(zip(self.header, values, strict=True)))

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> CsvStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def csv_header_read(path: str | Path, *, name: str = "") -> list[str]:
    """The header row of a CSV file (checks that it is UTF-8 CSV text at all)."""
    with CsvStream(path, name=name) as stream:
        return stream.header


# --- Creating a job -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSpec:
    record_kind: str
    name: str  # as shown and used in ids: the file's own name
    path: str  # where to read it


def file_import_create(
    *, source: SourceSystem, files: list[FileSpec], actor: User | None = None, enqueue: bool = True
) -> FileImport:
    """An import job for ``files``, checked before anything is read.

    1. refuse an inactive source, an unknown record kind, a file that is not
       UTF-8 CSV, a header that lacks a column a required mapping reads;
    2. the job and its files (customers first, then accounts, then the rest);
    3. on commit, enqueue the task that reads them (``enqueue=False``: the
       caller runs ``file_import_run`` itself, as the command does)."""
    if not files:
        raise ValidationError({"files": "Choose at least one CSV file to import."})
    if not source.active:
        raise ValidationError(
            {"source": f"{source.name} is deactivated: activate it (admin, Source systems) to import for it."}
        )
    sizes = []
    for spec in files:
        if spec.record_kind not in RecordKind.values:
            raise ValidationError(
                {"record_kind": f"{spec.name}: “{spec.record_kind}” is not a record kind. "
                                f"Use one of: {', '.join(RecordKind.values)}."}
            )  # fmt: skip
        try:
            header = csv_header_read(spec.path, name=spec.name)
        except ImportFileError as exc:
            raise ValidationError({"file": str(exc)}) from None
        import_header_check(source=source, record_kind=spec.record_kind, header=header, file_name=spec.name)
        sizes.append(os.path.getsize(spec.path))
    ordered = sorted(zip(files, sizes, strict=True), key=lambda pair: KIND_ORDER.get(pair[0].record_kind, 2))
    with transaction.atomic():
        job = FileImport.objects.create(source_system=source, created_by=actor, bytes_total=sum(sizes))
        ImportFile.objects.bulk_create(
            ImportFile(job=job, position=n, record_kind=spec.record_kind, name=spec.name[:255],
                       path=spec.path, size=size)
            for n, (spec, size) in enumerate(ordered)
        )  # fmt: skip
        if enqueue:
            transaction.on_commit(lambda: file_import_enqueue(job_id=job.pk))
    return job


def file_import_enqueue(*, job_id: int) -> bool:
    """Ask a worker to read the job; a broker that is away loses nothing (the sweep asks again)."""
    from crm import tasks  # noqa: PLC0415  (tasks import the services)

    try:
        # The touchpoint ingest queue: workers sized for intake take the imports too.
        options: dict[str, Any] = {"queue": settings.CRM_INGEST_QUEUE} if settings.CRM_INGEST_QUEUE else {}
        tasks.file_import_run.apply_async(args=(job_id,), **options)
    except Exception:
        logger.warning("could not enqueue file import %s; the sweep will", job_id, exc_info=True)
        return False
    return True


# --- Reading a job --------------------------------------------------------------------------


def _stale_before() -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=settings.CRM_IMPORT_STALE_SECONDS)


def file_import_claim(*, job_id: int, token: str) -> bool:
    """Take the job if it waits, or if its worker went quiet (a conditional update:
    a redelivered message finds a live worker's job taken and leaves it alone)."""
    now = timezone.now()
    claimable = Q(status=ImportStatus.QUEUED) | Q(status=ImportStatus.RUNNING) & (
        Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=_stale_before())
    )
    taken = (
        FileImport.objects.filter(claimable, pk=job_id)
        .update(status=ImportStatus.RUNNING, claimed_by=token, heartbeat_at=now)
    )  # fmt: skip
    if taken:
        FileImport.objects.filter(pk=job_id, started_at__isnull=True).update(started_at=now)
    return taken == 1


@dataclass
class Progress:
    """The job's figures as this run saw them last (for a progress bar)."""

    rows_read: int = 0
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    bytes_read: int = 0
    bytes_total: int = 0


@dataclass
class _Chunk:
    items: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the line of each item
    refused: list[tuple[int, str, str]] = field(default_factory=list)  # (line, field, reason)
    rows: int = 0
    last_line: int = 0


def file_import_run(
    *, job_id: int, worker: str = "", on_progress: Callable[[Progress], None] | None = None
) -> FileImport | None:
    """Read the job's files into the inbox; return the job, or None when another
    worker holds it.

    1. claim it (``file_import_claim``);
    2. for each file not done, skip the lines already stored and send the rest
       in chunks of 1,000 rows (``_chunk_store``: one transaction per chunk with
       its progress and refused rows);
    3. done; or failed with the reason a person can act on (the rows stored
       before stay stored)."""
    token = f"{(worker or socket.gethostname())[:40]}:{uuid.uuid4().hex[:12]}"
    if not file_import_claim(job_id=job_id, token=token):
        return None
    job = FileImport.objects.select_related("source_system").get(pk=job_id)
    progress = Progress(job.rows_read, job.accepted, job.duplicates, job.refused, job.bytes_read,
                        job.bytes_total)  # fmt: skip
    try:
        done_bytes = 0
        for import_file in job.files.order_by("position"):
            if not import_file.done:
                _file_read(job, import_file, token=token, done_bytes=done_bytes, progress=progress,
                           on_progress=on_progress)  # fmt: skip
            done_bytes += import_file.size
    except ImportTakenOver:
        logger.warning("file import %s was taken over by another worker", job_id)
        return None
    except ImportFileError as exc:
        finished = _finish(job, token=token, status=ImportStatus.FAILED, error=str(exc))
    except BaseException:
        # Let the next task or the sweep take it at once rather than after the
        # stale time; with the database away too, the stale time it is.
        try:
            FileImport.objects.filter(pk=job_id, claimed_by=token).update(heartbeat_at=None)
        except DatabaseError:
            logger.warning("could not release file import %s", job_id)
        raise
    else:
        finished = _finish(job, token=token, status=ImportStatus.DONE, error="")
    if not finished:  # taken over after its last chunk: the new holder finishes it
        return None
    _uploads_remove(job)
    job.refresh_from_db()
    if on_progress is not None:
        on_progress(Progress(job.rows_read, job.accepted, job.duplicates, job.refused, job.bytes_read,
                             job.bytes_total))  # fmt: skip
    return job


def _finish(job: FileImport, *, token: str, status: str, error: str) -> bool:
    now = timezone.now()
    values: dict[str, Any] = {"status": status, "error": error, "finished_at": now, "heartbeat_at": now}
    if status == ImportStatus.DONE:
        values["bytes_read"] = F("bytes_total")
    if not FileImport.objects.filter(pk=job.pk, claimed_by=token).update(**values):
        return False
    logger.info("file import %s %s: %s", job.pk, status, error or "all files read")
    return True


def _uploads_remove(job: FileImport) -> None:
    """Delete the job's uploaded copies once it is over: they hold customer data,
    and a fixed file is uploaded again. Files a command read where they lie
    (outside CRM_IMPORT_DIR) are never touched."""
    root = Path(settings.CRM_IMPORT_DIR).resolve()
    for name in job.files.values_list("path", flat=True):
        path = Path(name).resolve()
        if not path.is_relative_to(root) or path == root:
            continue
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # other files of the upload are still there
            path.parent.rmdir()


def _file_read(
    job: FileImport, import_file: ImportFile, *, token: str, done_bytes: int, progress: Progress,
    on_progress: Callable[[Progress], None] | None,
) -> None:  # fmt: skip
    source = job.source_system
    columns = import_columns(source=source, record_kind=import_file.record_kind)
    zone = zoneinfo.ZoneInfo(source.time_zone or "UTC")
    with CsvStream(import_file.path, name=import_file.name) as stream:
        try:
            import_header_check(source=source, record_kind=import_file.record_kind, header=stream.header,
                                file_name=import_file.name)  # fmt: skip
        except ValidationError as exc:  # the mappings changed since it was uploaded
            raise ImportFileError(" ".join(exc.messages)) from None
        chunk = _Chunk()
        for row in stream.rows():
            if row.line <= import_file.lines_done:
                continue  # stored by an earlier run of this job
            chunk.rows += 1
            chunk.last_line = row.line
            if row.values is None:
                chunk.refused.append((row.line, "row", row.problem))
            else:
                chunk.items.append(_item(row, import_file, columns=columns, zone=zone))
                chunk.lines.append(row.line)
            if chunk.rows >= CHUNK_ROWS:
                _chunk_store(job, import_file, chunk, token=token, bytes_read=done_bytes + stream.bytes_read,
                             progress=progress)  # fmt: skip
                # With DEBUG on (make demo) Django keeps the last 9,000 queries, each
                # chunk's INSERT carrying its 1,000 rows: 600 MB on a 1M-row file.
                reset_queries()
                if on_progress is not None:
                    on_progress(progress)
                chunk = _Chunk()
        _chunk_store(job, import_file, chunk, token=token, bytes_read=done_bytes + import_file.size,
                     progress=progress, last=True)  # fmt: skip
        if on_progress is not None:
            on_progress(progress)


def _item(
    row: Row, import_file: ImportFile, *, columns: KindColumns, zone: zoneinfo.ZoneInfo
) -> dict[str, Any]:
    values = row.values or {}
    external_id = values.get(columns.external_id, "").strip() if columns.external_id else ""
    if not external_id:
        # The same row of the same file gets the same id, so importing it again
        # stores nothing; the digest keeps a different file under the same name
        # from being taken for one imported before.
        digest = hashlib.blake2b(
            "\x1f".join(values.values()).encode(), digest_size=5, person=b"crm-import"
        ).hexdigest()
        external_id = f"{import_file.name[:90]}:{row.line}:{digest}"
    item: dict[str, Any] = {"external_id": external_id, "record_kind": import_file.record_kind,
                            "payload": values}  # fmt: skip
    if columns.occurred_at:
        moment = _moment(values.get(columns.occurred_at, ""), zone)
        if moment is not None:
            item["occurred_at"] = moment.isoformat()
    return item


def _moment(text: str, zone: zoneinfo.ZoneInfo) -> dt.datetime | None:
    """When the row happened, to order a customer's rows; a time without an
    offset is in the source's zone. A value that is no time is left to the
    mapping, which refuses it naming the column."""
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(dt.UTC)


def _chunk_store(
    job: FileImport, import_file: ImportFile, chunk: _Chunk, *, token: str, bytes_read: int,
    progress: Progress, last: bool = False,
) -> None:  # fmt: skip
    """Store one chunk, its refused rows and the progress in one transaction:
    after a crash either all of it is there or none, and the job resumes after
    ``lines_done``. The conditional update on ``claimed_by`` makes a worker that
    lost the job roll its chunk back instead of storing it beside the new one."""
    accepted = duplicates = 0
    refused = list(chunk.refused)
    with transaction.atomic():
        if chunk.items:
            batch = touchpoint_batch_receive(
                source=job.source_system, items=chunk.items, origin=BatchOrigin.FILE,
                file_name=import_file.name, actor=job.created_by,
            )  # fmt: skip
            accepted, duplicates = batch.accepted, batch.duplicates
            for error in batch.intake_errors:
                line = chunk.lines[error["index"]]
                for name, messages in error["errors"].items():
                    column = name.removeprefix("payload.")
                    reason = " ".join(messages) if isinstance(messages, list) else str(messages)
                    refused.append((line, column, reason))
        refused_rows = len({line for line, _, _ in refused})
        now = timezone.now()
        updated = FileImport.objects.filter(pk=job.pk, claimed_by=token).update(
            heartbeat_at=now, rows_read=F("rows_read") + chunk.rows, accepted=F("accepted") + accepted,
            duplicates=F("duplicates") + duplicates, refused=F("refused") + refused_rows,
            bytes_read=bytes_read,
        )  # fmt: skip
        if updated != 1:
            raise ImportTakenOver(job.pk)
        ImportFile.objects.filter(pk=import_file.pk).update(
            lines_done=max(chunk.last_line, import_file.lines_done), rows_read=F("rows_read") + chunk.rows,
            accepted=F("accepted") + accepted, duplicates=F("duplicates") + duplicates,
            refused=F("refused") + refused_rows, bytes_read=bytes_read, done=last,
        )  # fmt: skip
        if refused:
            ImportRejection.objects.bulk_create(
                ImportRejection(job=job, file=import_file, line=line, field=name[:255], reason=reason)
                for line, name, reason in sorted(refused)
            )
    import_file.lines_done = max(chunk.last_line, import_file.lines_done)
    progress.rows_read += chunk.rows
    progress.accepted += accepted
    progress.duplicates += duplicates
    progress.refused += refused_rows
    progress.bytes_read = bytes_read


# --- Sweep and report -------------------------------------------------------------------------


def file_imports_sweep() -> int:
    """Enqueue jobs that wait for a worker longer than the stale time (their
    message was lost) or whose worker went quiet; return how many."""
    stale = _stale_before()
    ids = list(
        FileImport.objects.filter(
            Q(status=ImportStatus.QUEUED, created_at__lt=stale)
            | Q(status=ImportStatus.RUNNING) & (Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=stale))
        ).values_list("pk", flat=True)[:100]
    )
    return sum(file_import_enqueue(job_id=pk) for pk in ids)


REPORT_HEADER = ["file", "line", "field", "reason"]


def file_import_report_rows(*, job: FileImport) -> Iterator[list[str]]:
    """The rejected-rows report, header first, in file and line order (streamed from the database)."""
    yield REPORT_HEADER
    rows = (
        ImportRejection.objects.filter(job=job)
        .order_by("file__position", "line", "id")
        .values_list("file__name", "line", "field", "reason")
    )
    for name, line, column, reason in rows.iterator(chunk_size=2000):
        yield [name, str(line), column, reason]


def file_import_report_write(*, job: FileImport, path: str | Path) -> int:
    """Write the report to ``path``; return how many rejected rows it lists."""
    count = -1
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        for row in file_import_report_rows(job=job):
            writer.writerow(row)
            count += 1
    return count
