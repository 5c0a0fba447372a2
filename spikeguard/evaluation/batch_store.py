"""Finished batches of an evaluation, kept on disk as they finish, so that a killed run resumes.

Beside ``--out R.json`` a hidden folder ``.R.json.batches/`` holds ``identity.json`` (what defines the run:
checkpoint, suite, eps, samples, seed, ...) and one ``batch-NNNNNN.json`` per finished batch (its per-sample
rows and the seconds each attack took), each written atomically. ``evaluate --resume`` runs only the
batches that are missing; batches are seeded by their number (runner.py), so the result equals that of a
run never interrupted. The folder is removed once results.json is written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from spikeguard.errors import UserError
from spikeguard.files import write_json
from spikeguard.schema import SampleOutcome


class BatchStore:
    def __init__(self, out: Path, identity: dict):
        self.out = Path(out)
        self.folder = self.out.parent / f".{self.out.name}.batches"
        self.identity = json.loads(json.dumps(identity))  # as it reads back from JSON

    def prepare(self, resume: bool) -> None:
        """Check the folder against this run (resume) or that none is left (a new run), and write
        identity.json. One process does this (rank 0 under torchrun); every rank saves its own batches."""
        out = self.out
        known = self.folder / "identity.json"
        if resume:
            if not known.is_file():
                raise UserError(f"nothing to resume for '{out}': no finished batches in '{self.folder}'; run "
                                "without --resume")
            stored = self._read(known)
            differ = sorted(k for k in set(stored) | set(self.identity) if stored.get(k) != self.identity.get(k))
            if differ:
                raise UserError(f"the evaluation in '{self.folder}' was started with other settings ("
                                f"{', '.join(differ)} differ); resume it with the same command, or run without "
                                "--resume into a new --out")
        elif self.folder.exists():
            count = len(list(self.folder.glob("batch-*.json")))
            if count:
                raise UserError(f"a killed evaluation left {count} finished batches in '{self.folder}': add "
                                "--resume to continue it, or remove that folder to start over")
            self.remove()  # a run refused or killed before its first batch left nothing worth keeping
        if not resume:
            write_json(known, self.identity)

    @staticmethod
    def _read(path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"'{path}' cannot be read ({type(e).__name__}); remove its folder to start over") from None

    def finished(self) -> dict[int, dict]:
        """Batch number -> {"rows": [SampleOutcome, ...], "seconds": {attack: s}} of every batch on disk."""
        out = {}
        for path in sorted(self.folder.glob("batch-*.json")):
            part = self._read(path)
            try:
                part["rows"] = [SampleOutcome.from_row(row) for row in part["rows"]]
            except (KeyError, TypeError, ValueError) as e:
                raise UserError(f"'{path}' holds malformed rows ({type(e).__name__}); remove its folder to start "
                                "over") from None
            out[int(part["number"])] = part
        return out

    def save(self, number: int, rows: list[SampleOutcome], seconds: dict[str, float]) -> None:
        write_json(self.folder / f"batch-{number:06d}.json",
                   {"number": number, "rows": [row.to_row(lists=True) for row in rows], "seconds": seconds})

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
