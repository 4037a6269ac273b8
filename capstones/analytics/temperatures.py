"""The real dataset: hourly temperatures in Seattle, 2010 (NOAA, public domain).

The file's times carry no offset (``2010/07/01 12:00``). Which clock they are on is not
written in the file: its provenance notes (``data/README.md``) and the data itself tell.
``to_timestamp`` below reads them in the session's time zone, whatever that is on the
machine that runs the load.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TIME_ZONE", "dataset_path", "load_temperatures"]

TIME_ZONE = None  # TODO R6: the file's clock, from data/README.md (an offset or a zone?)


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
            " SELECT to_timestamp(local_time, 'YYYY/MM/DD HH24:MI'), temp_f::double precision"
            " FROM raw_temps"
        ).rowcount  # TODO R6: on which clock are these times? (see the module's docstring)
    return count
