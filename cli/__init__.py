"""The `dropship` command: argument parsing and the terminal's output.

Beside `flows/`, not in the core: its handlers import the Prefect layer
(`flows/`, `blocks/`, `deployments/`) when they run, so a local server can be
started before Prefect reads its settings. `cli.main` parses, `cli.setup` has
blocks/check/ui, `cli.run` the progress lines of a release run here.
"""
