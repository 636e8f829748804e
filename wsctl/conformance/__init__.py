"""``wsctl conformance``: which protocol level a gateway reaches, and what it gets wrong."""
