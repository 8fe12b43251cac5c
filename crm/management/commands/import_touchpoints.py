"""``manage.py import_touchpoints``: a legacy CSV export into the touchpoint inbox.

    manage.py import_touchpoints --source billing --kind account accounts.csv
    manage.py import_touchpoints --source web --file customer=people.csv --file interaction=visits.csv

Rows are read as a stream and stored in chunks through the same intake as the
API (crm.services.imports); the workers then apply them. The rows refused, with
line, column and reason, go to a CSV report beside the (first) file.
"""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any, TextIO, cast

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from crm import services
from crm.models import FileImport, SourceSystem
from crm.models.choices import RecordKind
from crm.services.imports import FileSpec, Progress


class Command(BaseCommand):
    help = "Import CSV files of a source system's results with its field mappings (streaming)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--source", required=True, help="Code of the source system the files come from.")
        kinds = ", ".join(RecordKind.values)
        parser.add_argument("--kind", help=f"Record kind of the FILE arguments: {kinds}.")
        parser.add_argument(
            "--file", action="append", default=[], metavar="KIND=PATH", dest="kind_files",
            help="A file with its own record kind, e.g. --file customer=people.csv (repeatable).",
        )  # fmt: skip
        parser.add_argument("files", nargs="*", metavar="FILE", help="CSV files of the --kind records.")
        parser.add_argument("--report", help="Where to write the rejected rows (default: beside the file).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        source = SourceSystem.objects.filter(code=options["source"]).first()
        if source is None:
            known = ", ".join(SourceSystem.objects.order_by("code").values_list("code", flat=True))
            raise CommandError(f"No source system “{options['source']}”. Known: {known}.")
        specs = self._specs(options)
        try:
            job = services.file_import_create(source=source, files=specs, enqueue=False)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        bar = None
        if not options["no_progress"]:
            # The raw stream: Django's wrapper would end each of tqdm's redraws with a newline.
            stream = cast("TextIO", self.stderr._out)
            bar = tqdm(total=job.bytes_total, unit="B", unit_scale=True, file=stream, desc=f"import {job.pk}",
                       dynamic_ncols=True)  # fmt: skip

        def show(progress: Progress) -> None:
            if bar is not None:
                bar.update(progress.bytes_read - bar.n)
                bar.set_postfix(rows=progress.rows_read, stored=progress.accepted, refused=progress.refused)

        done = services.file_import_run(job_id=job.pk, worker="import_touchpoints", on_progress=show)
        if bar is not None:
            bar.close()
        if done is None:  # only a sweep or a worker could have taken a job made just now
            raise CommandError(f"Import {job.pk} was taken over by a worker; see it in the admin.")
        self._summary(done, report=self._report_path(options, specs))

    def _specs(self, options: dict[str, Any]) -> list[FileSpec]:
        pairs: list[tuple[str, str]] = []
        for text in options["kind_files"]:
            kind, sep, path = text.partition("=")
            if not sep or not path:
                raise CommandError(f"--file {text}: give KIND=PATH, e.g. --file customer=people.csv.")
            pairs.append((kind.strip(), path))
        if options["files"]:
            if not options["kind"]:
                raise CommandError(
                    "Give a record kind for the files: --kind KIND, or --file KIND=PATH for each file."
                )
            pairs.extend((options["kind"], path) for path in options["files"])
        if not pairs:
            raise CommandError("Give at least one CSV file (FILE with --kind, or --file KIND=PATH).")
        specs = []
        for kind, path in pairs:
            if kind not in RecordKind.values:
                raise CommandError(
                    f"“{kind}” is not a record kind: use one of {', '.join(RecordKind.values)}."
                )
            if not Path(path).is_file():
                raise CommandError(f"{path}: no such file.")
            specs.append(FileSpec(kind, Path(path).name, str(Path(path).resolve())))
        return specs

    @staticmethod
    def _report_path(options: dict[str, Any], specs: list[FileSpec]) -> Path:
        if options["report"]:
            return Path(options["report"])
        first = Path(specs[0].path)
        return first.with_name(f"{first.stem}.rejected.csv")

    def _summary(self, job: FileImport, *, report: Path) -> None:
        lines = [
            f"{job.rows_read:,} rows read: {job.accepted:,} stored, {job.duplicates:,} already there, "
            f"{job.refused:,} refused (import {job.pk}; the workers apply the stored rows)."
        ]
        files = list(job.files.all())
        if len(files) > 1:
            lines += [f"  {f.name} ({f.record_kind}): {f.rows_read:,} read, {f.accepted:,} stored, "
                      f"{f.duplicates:,} already there, {f.refused:,} refused" for f in files]  # fmt: skip
        if job.refused:
            services.file_import_report_write(job=job, path=report)
            lines.append(f"Rejected rows: {report}")
        if job.status == "failed":
            self.stdout.write("\n".join(lines))
            raise CommandError(job.error)
        self.stdout.write(self.style.SUCCESS(lines[0]) + "".join(f"\n{line}" for line in lines[1:]))
