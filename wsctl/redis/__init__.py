"""The Redis layer: where Redis is, clients for single node and cluster, their errors
in one line, cluster topology, SCAN, pub/sub that survives failover, and the bulk fast
path below redis-py's public API (``internals``, the only module that touches it)."""
