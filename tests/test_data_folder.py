"""The top-level data/ folder: checksums, the README's list of files, the 10 MB limit, no
generated data, and the data generator's output unchanged since its word lists moved there."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from datetime import date, timedelta
from itertools import pairwise

import pytest

from labkit import data, datasets
from labkit.config import project_root

DATA = project_root() / "data"
#: The files that are in data/ but not in the README's table (they describe the others).
NOT_LISTED = {"README.md", ".gitattributes"}
LIMIT_BYTES = 10 * 1000 * 1000
#: Suffixes of what code makes (exports, database files, caches): never committed here.
GENERATED_SUFFIXES = {
    ".arrow", ".db", ".duckdb", ".feather", ".gz", ".h5", ".npy", ".npz", ".parquet",
    ".pickle", ".pkl", ".sqlite", ".wal", ".zip",
}  # fmt: skip

#: sha256 of generate_blog's COPY text (users, posts, comments in turn), computed with the
#: word lists still inline in src/labkit/data.py, before they moved to data/.
FINGERPRINTS = {
    (200, 2_000, 4_000, 42): "a334032549aa23474fa48cb44e76c6eee656af2fad1632eb0791e1f7358c7000",
    (50, 300, 600, 7): "0206a719b99006b2d2eacc590b6334cfc03ffb985985e0858b47c1b4bc895554",
}


def files_in(folder) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def fingerprint(users: int, posts: int, comments: int, seed: int) -> str:
    chunks = data.generate_blog(
        users=users, posts=posts, comments=comments, seed=seed, progress=False
    )
    digest = hashlib.sha256()
    for table in ("users", "posts", "comments"):
        digest.update(table.encode())
        digest.update(b"".join(chunks[table]))
    return digest.hexdigest()


def test_checksums_match():
    """Every listed file's sha256, computed here, is the one data/README.md gives, and
    datasets.verify() returns the same."""
    listed = datasets.catalogue()
    computed = {name: hashlib.sha256((DATA / name).read_bytes()).hexdigest() for name in listed}
    assert computed == {name: listing.sha256 for name, listing in listed.items()}
    assert datasets.verify() == computed
    assert len(computed) == 6


def test_a_changed_byte_is_caught(tmp_path):
    """verify() on a copy of data/ passes, then fails naming the file once one byte changes
    (in a real dataset and in a word list)."""
    copy = tmp_path / "data"
    shutil.copytree(DATA, copy)
    assert datasets.verify(folder=copy) == datasets.verify()
    for name in ("seattle-temps.csv", "words.txt"):
        content = bytearray((copy / name).read_bytes())
        middle = len(content) // 2
        original = content[middle]
        content[middle] = ord("7") if original != ord("7") else ord("8")
        (copy / name).write_bytes(bytes(content))
        with pytest.raises(datasets.DatasetError, match=rf"data/{name} has changed") as caught:
            datasets.verify(folder=copy)
        assert f"git restore data/{name}" in str(caught.value)
        content[middle] = original
        (copy / name).write_bytes(bytes(content))
    (copy / "words.txt").unlink()
    with pytest.raises(datasets.DatasetError, match="data/words.txt is missing"):
        datasets.verify(folder=copy)


def test_a_missing_file_says_what_to_do(tmp_path, monkeypatch):
    """path() outside a course checkout names the file and how to get it back."""
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    with pytest.raises(datasets.DatasetError) as caught:
        datasets.path("seattle-temps.csv")
    message = str(caught.value)
    assert "data/seattle-temps.csv is missing" in message
    assert "git restore data/seattle-temps.csv" in message and "LABKIT_HOME" in message


def test_readme_lists_every_file_and_no_other():
    """The files in data/ are exactly the README's table (plus README.md and .gitattributes);
    each listed size and row count is true, and each file has a section that names it."""
    listed = datasets.catalogue()
    assert files_in(DATA) - NOT_LISTED == set(listed), "add or remove rows in data/README.md"
    assert NOT_LISTED <= files_in(DATA)
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for name, listing in listed.items():
        content = (DATA / name).read_bytes()
        lines = content.decode("utf-8").splitlines()
        rows = len(lines) - (1 if name.endswith(".csv") else 0)
        assert (len(content), rows) == (listing.bytes, listing.rows), name
        assert readme.count(f"`{name}`") >= 2, f"{name}: add a section on its provenance"


def test_folder_is_under_10_mb():
    """data/ stays under 10 MB (it holds about 250 KB)."""
    size = sum((DATA / name).stat().st_size for name in files_in(DATA))
    print(f"data/ holds {size:,} bytes")
    assert size < LIMIT_BYTES, f"data/ holds {size:,} bytes; the limit is {LIMIT_BYTES:,}"


def git(*args: str) -> list[str]:
    root = project_root()
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
    )
    if result.returncode not in (0, 1):  # check-ignore exits 1 when nothing is ignored
        pytest.fail(f"git {' '.join(args)}: {result.stderr}")
    return result.stdout.splitlines()


def test_no_generated_data_committed():
    """What git would commit from data/ (tracked, or new and not ignored) is the listed files
    and the two that describe them: nothing a program made, and no file ignored."""
    allowed = set(datasets.catalogue()) | NOT_LISTED
    committable = git("ls-files", "--cached", "--others", "--exclude-standard", "--", "data")
    names = {line.removeprefix("data/") for line in committable}
    assert names <= allowed, f"not listed in data/README.md: {sorted(names - allowed)}"
    generated = {n for n in files_in(DATA) if any(n.endswith(s) for s in GENERATED_SUFFIXES)}
    assert not generated, f"generated files in data/: {sorted(generated)} (write them elsewhere)"
    ignored = git("check-ignore", "--no-index", *(f"data/{name}" for name in sorted(allowed)))
    assert ignored == [], f"a .gitignore rule hides {ignored}: data/ must be committed whole"
    assert git("check-attr", "text", "--", "data/seattle-temps.csv") == [
        "data/seattle-temps.csv: text: unset"
    ], "data/.gitattributes must stop line-ending conversion"


def test_word_lists_load_and_the_generator_output_is_unchanged():
    """The generator's inputs load from data/ (order kept), and its rows are byte for byte
    those it made when the lists were written inline in data.py."""
    vocabulary = data.vocabulary()
    assert (len(vocabulary.first_names), len(vocabulary.last_names)) == (46, 41)
    assert (vocabulary.first_names[0], vocabulary.last_names[-1]) == ("ada", "wing")
    assert "spärck" in vocabulary.last_names  # read as UTF-8
    assert len(vocabulary.words) == 83 and vocabulary.words[-1] == "layer"
    assert vocabulary.countries[:3] == ("US", "IN", "DE")
    assert sum(vocabulary.country_weights) == 100
    for (users, posts, comments, seed), expected in FINGERPRINTS.items():
        assert fingerprint(users, posts, comments, seed) == expected, (users, posts, seed)


def test_seattle_readers():
    """The real datasets read as the README describes them: hourly, UTC-8, one hour missing;
    daily, four whole years."""
    temps = datasets.seattle_temps()
    assert len(temps) == 8_759
    assert {t.at.utcoffset() for t in temps} == {timedelta(hours=-8)}
    gaps = [b.at for a, b in pairwise(temps) if b.at - a.at != timedelta(hours=1)]
    assert [g.isoformat() for g in gaps] == ["2010-03-14T04:00:00-08:00"]
    days = datasets.seattle_weather()
    assert [d.day for d in days] == [date(2012, 1, 1) + timedelta(days=i) for i in range(1_461)]
    assert {d.weather for d in days} == {"sun", "fog", "rain", "drizzle", "snow"}
