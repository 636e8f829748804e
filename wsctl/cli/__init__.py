"""The Typer command-line interface: the only package that talks to the terminal."""
