"""DBA Studio benchmarks: `python -m bench` prints the tables (see bench/README.md)."""
