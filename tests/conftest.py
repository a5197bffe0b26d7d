"""Shared fixtures: export writers, a small synthetic export with planted structure, Prefect harness."""

from __future__ import annotations

import os

# Set before Prefect is imported anywhere in the session.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# A temporary Prefect server can take more than Prefect's default 30 s to start on a busy 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

HEADER = ("ID_CLIENTE", "FECHA_INTERACCION", "NOMBRE_CORTO_DE_EXPERIENCIA", "CALIFICACION")
DATE_FORMAT = "%m/%d/%Y %H:%M"

REAL_DATA = Path(__file__).parents[2] / "shared/data/valoraciones_usuarios_2021_2022.csv"
SAMPLE = Path(__file__).parents[1] / "data/interactions_sample.csv"

needs_real_data = pytest.mark.skipif(not REAL_DATA.is_file(), reason=f"real export not present at {REAL_DATA}")


def quote(value: object) -> str:
    """One CSV field quoted the way the export quotes every field."""
    return '"' + str(value).replace('"', '""') + '"'


def csv_text(rows, header=HEADER, delimiter: str = ",", newline: str = "\n") -> str:
    """The export's text: header then rows, every field quoted."""
    lines = [delimiter.join(quote(h) for h in header)]
    lines += [delimiter.join(quote(v) for v in row) for row in rows]
    return newline.join(lines) + newline


def export_date(ts: pd.Timestamp) -> str:
    """A time as the export writes it: ``1/30/2021 13:30`` (no zero padding)."""
    return f"{ts.month}/{ts.day}/{ts.year} {ts.hour}:{ts.minute:02d}"


@pytest.fixture
def write_csv(tmp_path):
    """``write_csv(rows, name=..., header=..., encoding=..., newline=..., bom=..., delimiter=...) -> Path``."""

    def write(
        rows,
        name: str = "export.csv",
        header=HEADER,
        encoding: str = "utf-8",
        newline: str = "\n",
        bom: bool = False,
        delimiter: str = ",",
    ) -> Path:
        path = tmp_path / name
        data = csv_text(rows, header, delimiter, newline).encode(encoding)
        if bom:
            data = b"\xef\xbb\xbf" + data
        path.write_bytes(data)
        return path

    return write


# ---------------------------------------------------------------------------------------------
# A small export with planted structure: 2 taste groups, 20 items each.
# ---------------------------------------------------------------------------------------------

N_USERS = 120
N_ITEMS = 40
GROUP_A_NAMES = [f"Bono restaurante {n}" for n in range(20)]
GROUP_B_NAMES = [f"Curso deporte {n}" for n in range(20)]
# A few catalogue names carry stray surrounding spaces in the export, as in the real one.
SPACED = {"Bono restaurante 3": "Bono restaurante 3 ", "Curso deporte 7": " Curso deporte 7"}


@dataclass(frozen=True)
class Synthetic:
    """The raw export rows, the canonical frame they should load as, and the ground truth."""

    rows: list[tuple[str, str, str, str]]
    frame: pd.DataFrame  # canonical: user_id, item, timestamp, rating (names stripped)
    user_group: dict[str, int]  # 0 = A, 1 = B
    item_group: dict[str, int]
    duplicates: int  # exact duplicate rows in the export


def make_synthetic(seed: int = 3, n_users: int = N_USERS) -> Synthetic:
    rng = np.random.default_rng(seed)
    names = GROUP_A_NAMES + GROUP_B_NAMES
    item_group = {name: (0 if i < 20 else 1) for i, name in enumerate(names)}
    start = pd.Timestamp("2021-01-04 09:00")
    records: list[tuple[str, pd.Timestamp, str, int]] = []
    user_group: dict[str, int] = {}
    for u in range(n_users):
        user = str(u + 1)
        group = u % 2
        user_group[user] = group
        own = np.arange(20) + 20 * group
        other = np.arange(20) + 20 * (1 - group)
        n = int(rng.integers(4, 9))
        # Zipf-ish preference inside the group so there is popularity to learn too.
        weights = 1.0 / (np.arange(20) + 1.0)
        weights /= weights.sum()
        picked: list[int] = []
        while len(picked) < n:
            pool = own if rng.random() < 0.9 else other
            item = int(rng.choice(pool, p=weights))
            if item not in picked:
                picked.append(item)
        offsets = np.sort(rng.integers(0, 700 * 24 * 60, size=n))
        for item, minutes in zip(picked, offsets):
            ts = start + pd.Timedelta(minutes=int(minutes))
            rating = int(rng.choice([5, 5, 5, 4, 3, 1]))
            records.append((user, ts, names[item], rating))
    # Several units redeemed at once: exact repeats of a few rows.
    repeat = rng.choice(len(records), size=15, replace=False)
    rows_out = []
    duplicates = 0
    for index, record in enumerate(records):
        rows_out.append(record)
        if index in set(repeat.tolist()):
            rows_out.append(record)
            duplicates += 1
    rows = [(u, export_date(ts), SPACED.get(item, item), str(r)) for u, ts, item, r in rows_out]
    frame = pd.DataFrame(
        {
            "user_id": [r[0] for r in rows_out],
            "item": [r[2] for r in rows_out],
            "timestamp": pd.to_datetime([r[1] for r in rows_out]).astype("datetime64[ns]"),
            "rating": np.array([r[3] for r in rows_out], dtype=np.int8),
        }
    )
    return Synthetic(rows=rows, frame=frame, user_group=user_group, item_group=item_group, duplicates=duplicates)


@pytest.fixture(scope="session")
def synthetic() -> Synthetic:
    """The small planted-structure export (built once per session; treat as read-only)."""
    return make_synthetic()


@pytest.fixture
def synthetic_frame(synthetic) -> pd.DataFrame:
    """A fresh copy of the canonical frame of the small export."""
    return synthetic.frame.copy()


@pytest.fixture
def synthetic_csv(synthetic, write_csv) -> Path:
    """The small export written as a CSV in the real format."""
    return write_csv(synthetic.rows, name="interactions.csv")


@pytest.fixture(scope="session")
def prefect_test_harness():
    """A throwaway Prefect API (temporary database) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness as harness

    with harness(server_startup_timeout=120):
        yield


def run_flow(synthetic: Synthetic, folder: Path, **options) -> tuple[dict, Path, Path]:
    """Write the small export to ``folder`` and run the nightly flow on it in this process.

    Returns (summary, export path, output folder); ``options`` are fields of ``RunOptions``.
    """
    from flows.nightly import nightly
    from recsys.settings import RunOptions

    data = folder / "interactions.csv"
    data.write_text(csv_text(synthetic.rows), encoding="utf-8")
    output = folder / "out"
    return nightly(RunOptions(data=data, output=output, **options)), data, output


def interactions_of(frame: pd.DataFrame):
    """A canonical frame (user_id, item, timestamp, rating) encoded as ``Interactions``."""
    from recsys.data.interactions import Interactions

    return Interactions.from_columns(frame["user_id"], frame["item"], frame["timestamp"].to_numpy(), frame["rating"])


def list_table(rows):
    """(user_id, rank, item, score) tuples as the Arrow table a store publishes."""
    import pyarrow as pa

    return pa.table(
        {
            "user_id": pa.array([r[0] for r in rows]),
            "rank": pa.array([r[1] for r in rows], pa.int16()),
            "item": pa.array([r[2] for r in rows]),
            "score": pa.array([r[3] for r in rows], pa.float64()),
            "reason": pa.array([r[4] if len(r) > 4 else "popular lately" for r in rows]),
        }
    )


def popular_list(run: str, k: int = 12):
    """A cold-start list of ``k`` items named after ``run``, as the Arrow table a store publishes."""
    import pyarrow as pa

    return pa.table(
        {
            "rank": pa.array(range(1, k + 1), pa.int16()),
            "item": pa.array([f"{run} popular {i}" for i in range(k)]),
            "score": pa.array([float(k - i) for i in range(k)]),
            "reason": pa.array(["popular lately"] * k),
        }
    )


def options_app():
    """A Typer app whose one command takes the run options as ``recsys run`` does (the
    ``--config`` file under the command line), and the dict its ``options`` land in."""
    import typer

    from recsys.cli.app import with_run_options

    seen = {}
    app = typer.Typer()

    @app.command()
    @with_run_options()
    def show(options) -> None:
        seen["options"] = options

    @app.command()
    def other() -> None:  # a second command keeps Typer from flattening the app
        pass

    return app, seen
