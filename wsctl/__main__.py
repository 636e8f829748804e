"""`python -m wsctl` runs the CLI."""

from wsctl.cli.entry import main

if __name__ == "__main__":
    main()
