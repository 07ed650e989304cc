"""Benchmarks (one script per target, e.g. `python -m bench.kernels`); results are appended as JSON lines."""
import json
import os


def append_jsonl(path: str | None, meta: dict, rows: list[dict]):
    """Append one JSON line per row (the run's `meta` merged in), so a table can be rebuilt from the data."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        for r in rows:
            f.write(json.dumps({**meta, **r}) + "\n")
