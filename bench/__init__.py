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


def write_outputs(out: str, result: dict, figure, markdown):
    """`out.json` (the result), `out.png` (`figure(result, path)`) and `out.md` (`markdown(result)`),
    and print the markdown."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    figure(result, out + ".png")
    text = markdown(result)
    with open(out + ".md", "w") as f:
        f.write(text)
    print(text)


def save_json_md(json_path: str | None, result: dict, md_path: str | None, text: str):
    """`result` as JSON at `json_path` and the markdown `text` at `md_path` (a None or '' path: not written)."""
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
    if md_path:
        with open(md_path, "w") as f:
            f.write(text)


class Section:
    """A markdown section appended to `path` and rewritten in place each time it grows, so a run cut short (a
    stage limit of scripts/gpu_check.sh) leaves what it measured so far; a None or '' path writes nothing."""

    def __init__(self, path: str | None):
        self.path, self.start = path or None, 0
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path, "a") as f:
                self.start = f.tell()

    def write(self, text: str):
        if self.path:
            with open(self.path, "r+") as f:
                f.seek(self.start)
                f.write(text)
                f.truncate()
