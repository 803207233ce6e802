"""The ``stemdaq`` command line (typer).

Each group of commands lives in ``stemdaq.commands``; this module only assembles them:

- ``acquire``, ``inspect``: one acquisition into one file / check a file (no server needed)
- ``sim``: the simulated detector
- ``serve``: the REST service; ``status``, ``start``, ``stop``, ``watch``: its client side
- ``detector status|disarm|abort|initialize``: check or reset a detector over SIMPLON
- ``rank``, ``fan``, ``relink``: one writer rank / the router in front of N ranks / repoint a
  scale-out master at its rank files after a crash
"""

from __future__ import annotations

import typer

from stemdaq.commands import detector, files, inspect, rank, service, simulator

app = typer.Typer(no_args_is_help=True, help="4D-STEM acquisition and storage service.")

files.register(app)
inspect.register(app)
simulator.register(app)
service.register(app)
detector.register(app)
rank.register(app)


@app.command()
def version() -> None:
    """Print the stemdaq version."""
    from stemdaq import __version__

    typer.echo(__version__)


def main() -> None:  # pragma: no cover - console entry point
    """Console entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover - python -m stemdaq.cli
    main()
