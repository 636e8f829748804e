"""wsctl: operations and diagnostics for WebSocket gateway fleets sharing a Redis registry."""

__version__ = "0.1.0"
