"""Reading speed of raw Criteo TSV, Parquet and terarec's prepared layout.

Concatenates the Criteo sample to about ``--rows`` rows in a temporary directory, then times,
best of ``--repeat``: ``read_files`` on the TSV (the baseline), ``read_files`` on a Parquet
copy, and ``open_prepared`` plus touching every column. Prints a table; ``--json FILE`` also
writes the results with the machine, date and load.

    python bench/prepare.py --rows 500000 --json prepare.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from terarec.data import DataConfig, DataFormat, open_prepared, prepare, read_files
from terarec.data.readers import CRITEO_COLUMNS

from _machine import machine_info, write_json

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "criteo_kaggle_9k" / "train.tsv"


def touch_all(data) -> float:
    total = float(np.sum(data.labels)) + float(np.sum(data.dense))
    for col in data.sparse.values():
        total += float(np.sum(col.offsets[-1:])) + float(np.bitwise_xor.reduce(col.values))
    return total


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sample = SAMPLE.read_bytes()
    copies = max(1, -(-args.rows // sample.count(b"\n")))
    config = DataConfig()
    with tempfile.TemporaryDirectory() as tmp:
        tsv = Path(tmp) / "train.tsv"
        tsv.write_bytes(sample * copies)
        parquet = Path(tmp) / "train.parquet"
        table = pacsv.read_csv(tsv, read_options=pacsv.ReadOptions(column_names=list(CRITEO_COLUMNS)),
                               parse_options=pacsv.ParseOptions(delimiter="\t"),
                               convert_options=pacsv.ConvertOptions(
                                   column_types={c: "string" for c in CRITEO_COLUMNS[14:]}))
        pq.write_table(table, parquet)
        pq_config = DataConfig(label="label", dense_features=CRITEO_COLUMNS[1:14])
        prepare([tsv], DataFormat.CRITEO, config, Path(tmp) / "prepared")
        rows = read_files([tsv], DataFormat.CRITEO, config).num_rows
        cases = [
            ("criteo_tsv (baseline)", lambda: read_files([tsv], DataFormat.CRITEO, config)),
            ("parquet", lambda: read_files([parquet], DataFormat.PARQUET, pq_config)),
            ("prepared (mmap + touch)", lambda: touch_all(open_prepared(Path(tmp) / "prepared"))),
        ]
        results = []
        for name, fn in cases:
            seconds = best_of(args.repeat, fn)
            results.append({"format": name, "rows": rows, "seconds": round(seconds, 4),
                            "rows_per_second": round(rows / seconds)})
    print(f"{'format':<26}{'rows':>10}{'seconds':>10}{'rows/s':>14}")
    for r in results:
        print(f"{r['format']:<26}{r['rows']:>10}{r['seconds']:>10.3f}{r['rows_per_second']:>14,}")
    write_json(args.json, {"machine": machine_info(), "results": results})


if __name__ == "__main__":
    main()
