"""``wsctl doctor``: the registry versus reality. ``diagnose`` is the pure diff (facts and
``now`` in, findings out), ``fleet`` gathers the facts and applies the safe fixes, ``robot``
checks one robot end to end."""
