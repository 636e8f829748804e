"""Examples of embedding wsctl (run from a checkout)."""
