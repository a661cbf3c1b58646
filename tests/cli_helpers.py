"""What the command-line tests share: CSV files and the one-line error contract."""
import csv


def write_csv(path, header, rows):
    """Write ``header`` and ``rows`` to ``path`` as CSV; returns the path."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def assert_one_line_error(captured, text: str) -> None:
    """A failed command printed one line, "flashgp: error: ..." containing ``text``, on stderr only."""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flashgp: error: "), captured.err
    assert text in lines[0] and captured.out == ""
