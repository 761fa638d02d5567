"""Command-line wiring: one Typer module per command, each thin (parse → spec → core → render)."""
