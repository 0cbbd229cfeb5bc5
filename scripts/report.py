"""python scripts/report.py <sweep dir>: the same as the bof-report console script."""

from bof.cli.report import cli

if __name__ == "__main__":
    cli()
