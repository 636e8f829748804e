"""`python -m wsctl` runs the CLI."""

from wsctl.cli.main import main

if __name__ == "__main__":
    main()
