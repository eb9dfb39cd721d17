"""`avssl` command line (placeholder until the subcommands land)."""
def main() -> None:
    raise SystemExit("avssl: no commands yet")
