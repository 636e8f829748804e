"""Local fleets for trying wsctl and for its tests: embedded Redis servers (single nodes and
real clusters), ``wsctl gateway`` processes, demo robots, and the sandbox that runs them all.
Every process started here is stopped by whoever started it (context managers, atexit as
last resort)."""
