"""The real dataset: hourly temperatures in Seattle, 2010 (NOAA, public domain).

The file's times carry no offset. Its provenance notes (``data/README.md``) say what its clock
is: UTC-8 (Pacific Standard Time) all year, with no daylight saving time. The data shows it:
2010-03-14 02:00 is in the file (that hour never happened on Seattle's wall clocks), 03:00 is
the hour missing, and 2010-11-07 01:00 appears once, not twice. So ``2010/07/01 12:00`` is
20:00 UTC, like ``2010/01/01 12:00``. Read as UTC, every reading would be 8 hours off; read
as ``America/Los_Angeles``, the summer readings would be an hour off. PostgreSQL converts
them with ``AT TIME ZONE INTERVAL '-08:00'`` (a fixed offset; the zone name ``Etc/GMT+8``
means the same, its sign flipped as POSIX names are).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TIME_ZONE", "dataset_path", "load_temperatures"]

TIME_ZONE = "-08:00"  # UTC-8 all year: an offset, not a zone with summer time


def dataset_path() -> Path:
    """Where ``seattle-temps.csv`` is: ``labkit.datasets`` when it exists, else ``data/``."""
    try:
        from labkit import datasets

        return Path(datasets.path("seattle-temps.csv"))
    except ImportError:
        from labkit import config

        return config.project_root() / "data" / "seattle-temps.csv"


def load_temperatures(conn, path=None) -> int:
    """Load the CSV into ``temperatures(observed_at timestamptz, temp_f double precision)``;
    returns the rows loaded."""
    path = Path(path or dataset_path())
    with conn.transaction():
        conn.execute("DROP TABLE IF EXISTS temperatures")
        conn.execute(
            "CREATE TABLE temperatures ("
            " observed_at timestamptz PRIMARY KEY, temp_f double precision NOT NULL)"
        )
        conn.execute("CREATE TEMP TABLE raw_temps (local_time text, temp_f text) ON COMMIT DROP")
        with (
            open(path, "rb") as source,
            conn.cursor().copy("COPY raw_temps FROM STDIN (FORMAT csv, HEADER true)") as copy,
        ):
            while block := source.read(1 << 16):
                copy.write(block)
        count = conn.execute(
            "INSERT INTO temperatures"
            " SELECT local_time::timestamp AT TIME ZONE %s::interval,"
            "        temp_f::double precision"
            " FROM raw_temps",
            (TIME_ZONE,),
        ).rowcount
    return count
