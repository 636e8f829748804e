"""The fleet event log: what an event is and how its stream entries read back (pure), and
the writers' index that ``wsctl events`` reads instead of scanning the keyspace."""
