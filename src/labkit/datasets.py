"""The course's fixed input files, in the top-level ``data/`` folder, checked against their
checksums.

>>> from labkit import datasets
>>> datasets.path("seattle-temps.csv").name
'seattle-temps.csv'
>>> sums = datasets.verify()                      # every file data/README.md lists
>>> sums["seattle-temps.csv"]
'c220666521ff4bec4ffb6f0d9acfdc5c1056564b1aad6f78d3b06aa0a0c8b085'
>>> temps = datasets.seattle_temps()
>>> len(temps), temps[0].at.isoformat(), temps[0].temp_f
(8759, '2010-01-01T00:00:00-08:00', 39.4)

``data/README.md`` is the one list of the files: its "Files" table gives each file's size,
rows and SHA-256, and its sections say where each file comes from and under which licence.
Every reader here checks the file's checksum first (once per process), so a changed byte
stops the lesson with a message instead of changing its numbers quietly. Nothing is
downloaded: the files ship with the course.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

from labkit.config import project_root
from labkit.errors import LabkitError

__all__ = [
    "PACIFIC_STANDARD_TIME",
    "DailyWeather",
    "DatasetError",
    "Listing",
    "TempReading",
    "catalogue",
    "data_dir",
    "path",
    "read_bytes",
    "seattle_temps",
    "seattle_weather",
    "verify",
]

#: The time zone of ``seattle-temps.csv``: UTC-8 all year, with no daylight saving time
#: (see ``data/README.md`` for how the data shows it).
PACIFIC_STANDARD_TIME = timezone(timedelta(hours=-8), "PST")

README = "README.md"

# A row of the "Files" table: | `name` | bytes | rows | `sha256` | ...
_ROW = re.compile(
    r"^\|\s*`(?P<name>[^`]+)`\s*\|\s*(?P<bytes>[\d,]+)\s*\|\s*(?P<rows>[\d,]+)\s*\|"
    r"\s*`(?P<sha256>[0-9a-f]{64})`\s*\|"
)


class DatasetError(LabkitError):
    """A file of ``data/`` is missing, unlisted, or not the file its checksum describes."""


@dataclass(frozen=True)
class Listing:
    """One row of the "Files" table in ``data/README.md``."""

    name: str
    bytes: int
    rows: int
    sha256: str


class TempReading(NamedTuple):
    """One hour of ``seattle-temps.csv``: when (UTC-8), and the temperature in °F."""

    at: datetime
    temp_f: float


class DailyWeather(NamedTuple):
    """One day of ``seattle-weather.csv`` (units as in data/README.md)."""

    day: date
    precipitation_mm: float
    temp_max_c: float
    temp_min_c: float
    wind_m_s: float
    weather: str


def data_dir() -> Path:
    """The ``data/`` folder of the course checkout (:func:`labkit.config.project_root`)."""
    return project_root() / "data"


def path(name: str) -> Path:
    """The file ``name`` in ``data/``; :class:`DatasetError` if it is not there. It does not
    read the file: if you read it yourself (with DuckDB, pandas...), ``verify([name])`` first.

    >>> path("words.txt").relative_to(data_dir()).as_posix()
    'words.txt'
    >>> path("no-such-file.csv")
    Traceback (most recent call last):
    ...
    labkit.datasets.DatasetError: data/no-such-file.csv is missing from ...
    """
    found = data_dir() / name
    if not found.is_file():
        raise _missing(found)
    return found


def _missing(file: Path) -> DatasetError:
    return DatasetError(
        f"data/{file.name} is missing from {file.parent}. The course ships it: restore it "
        f"with `git restore data/{file.name}` in the course folder (or set LABKIT_HOME to the "
        "course folder if labkit looks in the wrong place). data/README.md lists the files "
        "and where each comes from."
    )


def catalogue(folder: Path | None = None) -> dict[str, Listing]:
    """The files ``data/README.md`` lists, by name (its "Files" table); ``folder`` is
    another copy of ``data/`` to read instead.

    >>> catalogue()["countries.csv"].rows
    12
    """
    return dict(_catalogue((folder or data_dir()).resolve()))


def _parse_readme(folder: Path) -> dict[str, Listing]:
    readme = folder / README
    if not readme.is_file():
        raise _missing(readme)
    text = readme.read_text(encoding="utf-8")
    listings = {}
    for line in text.splitlines():
        if match := _ROW.match(line):
            name = match["name"]
            if name in listings:
                raise DatasetError(f"data/README.md lists {name} twice: keep one row")
            listings[name] = Listing(
                name,
                int(match["bytes"].replace(",", "")),
                int(match["rows"].replace(",", "")),
                match["sha256"],
            )
    if not listings:
        raise DatasetError(
            'data/README.md has no "Files" table rows like '
            "| `name` | bytes | rows | `sha256` | ...: restore it with `git restore data/README.md`"
        )
    return listings


#: The README read once per folder (the readers); verify() reads it again each time.
_catalogue = functools.cache(_parse_readme)


def _check(name: str, content: bytes, listing: Listing | None) -> str:
    if listing is None:
        raise DatasetError(
            f'data/{name} is not listed in data/README.md: add a row to its "Files" table '
            "(size, rows, sha256) and a section saying where the file comes from and its licence"
        )
    digest = hashlib.sha256(content).hexdigest()
    if digest != listing.sha256:
        raise DatasetError(
            f"data/{name} has changed: its sha256 is {digest}, data/README.md says "
            f"{listing.sha256} ({len(content):,} bytes now, {listing.bytes:,} listed). Restore "
            f"it with `git restore data/{name}`. If the change is meant, update its row in "
            "data/README.md, and bump labkit.data.DATA_VERSION if the data generator reads it."
        )
    return digest


@functools.cache
def read_bytes(name: str) -> bytes:
    """The content of ``data/<name>``, read once and checked against its listed sha256.

    >>> read_bytes("countries.csv").splitlines()[0]
    b'country,weight'
    """
    content = path(name).read_bytes()
    _check(name, content, catalogue().get(name))
    return content


def verify(names: Iterable[str] | None = None, *, folder: Path | None = None) -> dict[str, str]:
    """Check the files (default: every file ``data/README.md`` lists) against their listed
    sha256 and return ``{name: sha256}``; :class:`DatasetError` names the first file that
    differs. The files and the README are read again on every call; ``folder`` checks
    another copy of ``data/`` (with its own README.md).

    >>> verify(["words.txt"])
    {'words.txt': '...'}
    """
    folder = (folder or data_dir()).resolve()
    listings = _parse_readme(folder)
    sums = {}
    for name in listings if names is None else names:
        file = folder / name
        if not file.is_file():
            raise _missing(file)
        sums[name] = _check(name, file.read_bytes(), listings.get(name))
    return sums


def _csv_rows(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(read_bytes(name).decode("utf-8"))))


@functools.cache
def seattle_temps() -> tuple[TempReading, ...]:
    """Hourly temperatures (°F) in Seattle in 2010, oldest first: 8,759 rows.

    Times are UTC-8 (:data:`PACIFIC_STANDARD_TIME`) all year: the file's clock does not move
    for daylight saving time. One hour is missing, 2010-03-14 03:00.

    >>> temps = seattle_temps()
    >>> temps[-1].at.isoformat(), temps[-1].temp_f
    ('2010-12-31T23:00:00-08:00', 39.6)
    >>> from itertools import pairwise
    >>> missing = [a.at for a, b in pairwise(temps) if b.at - a.at != timedelta(hours=1)]
    >>> [str(at + timedelta(hours=1)) for at in missing]
    ['2010-03-14 03:00:00-08:00']
    """
    return tuple(
        TempReading(
            datetime.strptime(row["date"], "%Y/%m/%d %H:%M").replace(tzinfo=PACIFIC_STANDARD_TIME),
            float(row["temp"]),
        )
        for row in _csv_rows("seattle-temps.csv")
    )


@functools.cache
def seattle_weather() -> tuple[DailyWeather, ...]:
    """Daily weather in Seattle, 2012-01-01 to 2015-12-31: 1,461 rows, one per day.

    >>> days = seattle_weather()
    >>> len(days), days[0]
    (1461, DailyWeather(day=datetime.date(2012, 1, 1), precipitation_mm=0.0, temp_max_c=12.8, temp_min_c=5.0, wind_m_s=4.7, weather='drizzle'))
    """  # noqa: E501
    return tuple(
        DailyWeather(
            datetime.strptime(row["date"], "%Y/%m/%d").date(),
            float(row["precipitation"]),
            float(row["temp_max"]),
            float(row["temp_min"]),
            float(row["wind"]),
            row["weather"],
        )
        for row in _csv_rows("seattle-weather.csv")
    )
