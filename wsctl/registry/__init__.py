"""The connection registry: key names, the entry model, and the async store."""
