"""An example tproxy worker in Python: the CSV pipeline of the Go example
examples/pipeline, as two drivers.

- ``csv_extract`` reads ``config.path`` into a :class:`Table` kept as output
  ``table``, and writes the first rows as the artifact ``sample.csv``;
- ``filter_aggregate`` takes input ``table``, keeps the rows matching
  ``config.where`` (column → value) and ``config.min`` (column → least
  number), groups them by ``config.group_by``, counts them and sums each
  ``config.sum`` expression (``{"as": name, "expr": "a*b", "decimals": 2}``),
  exactly, in decimal; it keeps the result as output ``table`` and writes it
  as the artifact ``config.output`` (default ``aggregate.csv``).

Run it behind the Go host with
``transport.Subprocess{Path: "python3", Args: []string{"workers/python/example_driver.py"}}``.
"""

import csv
import decimal
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tproxy_worker import ConfigError, StepError, Worker, main  # noqa: E402

worker = Worker("tproxy-python-example", "0.1.0")


class Table:
    """The data flowing between the steps. It stays in the worker; only its
    summary crosses the wire."""

    def __init__(self, header, rows=None):
        self.header = list(header)
        self.rows = rows if rows is not None else []

    def summary(self):
        return {"type": "table", "columns": self.header, "rows": len(self.rows)}

    def column(self, name):
        try:
            return self.header.index(name)
        except ValueError:
            raise StepError("no column %r (columns: %s)" % (name, ", ".join(self.header)), error_type="missing_column") from None

    def write(self, path):
        with open(path, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(self.header)
            w.writerows(self.rows)


@worker.driver("csv_extract")
def csv_extract(step):
    path = step.config.get("path")
    if not path:
        raise ConfigError("csv_extract: config.path is required")
    every = int(step.config.get("progress_every") or 100)
    with open(path, newline="") as f:  # a missing file fails the step (error_type driver)
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError("csv_extract: %s is empty" % path)
        table = Table(header)
        for row in reader:
            table.rows.append(row)
            if len(table.rows) % every == 0:
                step.event("progress", {"rows_read": len(table.rows)})  # raises Cancelled once cancelled
    step.log.info("extracted", extra={"path": os.path.basename(path), "rows": len(table.rows)})
    step.metric("rows_read", len(table.rows), unit="rows")
    Table(header, table.rows[:5]).write(os.path.join(step.artifact_dir, "sample.csv"))
    step.set_rows(len(table.rows))
    step.set_output("table", table)


def _number(text, what):
    try:
        return decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise ValueError("%s: %r is not a number" % (what, text)) from None


@worker.driver("filter_aggregate")
def filter_aggregate(step):
    table = step.input("table")
    if not isinstance(table, Table):
        raise TypeError("filter_aggregate: input 'table' is a %s, not a table" % type(table).__name__)
    cfg = step.config
    group = table.column(cfg.get("group_by", ""))
    conds = [(table.column(k), str(v), None) for k, v in sorted((cfg.get("where") or {}).items())]
    conds += [(table.column(k), None, _number(str(v), "min." + k)) for k, v in sorted((cfg.get("min") or {}).items())]
    sums = cfg.get("sum") or []
    exprs = [[table.column(name.strip()) for name in s["expr"].split("*")] for s in sums]

    counts, totals, kept = {}, {}, 0
    for n, row in enumerate(table.rows):
        if n % 1000 == 0:
            step.check_cancelled()
        if any((want is not None and row[c] != want) or (least is not None and _number(row[c], "row %d" % (n + 2)) < least)
               for c, want, least in conds):
            continue
        kept += 1
        key = row[group]
        counts[key] = counts.get(key, 0) + 1
        acc = totals.setdefault(key, [decimal.Decimal(0)] * len(exprs))
        for j, cols in enumerate(exprs):
            prod = decimal.Decimal(1)
            for c in cols:
                prod *= _number(row[c], "row %d: column %s" % (n + 2, table.header[c]))
            acc[j] += prod

    out = Table([cfg["group_by"], "orders"] + [s["as"] for s in sums])
    for key in sorted(counts):
        row = [key, str(counts[key])]
        for j, s in enumerate(sums):
            q = decimal.Decimal(1).scaleb(-int(s.get("decimals", 0)))
            row.append(str(totals[key][j].quantize(q)))
        out.rows.append(row)
    out.write(os.path.join(step.artifact_dir, cfg.get("output") or "aggregate.csv"))
    step.metric("rows_filtered_out", len(table.rows) - kept, unit="rows")
    step.event("aggregated", {"groups": len(out.rows), "rows_kept": kept})
    step.set_rows(kept)
    step.set_output("table", out)


if __name__ == "__main__":
    main(worker)
