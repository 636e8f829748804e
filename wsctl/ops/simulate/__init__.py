"""``wsctl simulate``, one module per part: what a run is asked (``options``: options and
SLOs), its state (``state``), its phases (``phases``) and chaos (``chaos``), how they run in
order (``run``, the entry point), what it found (``report``), and the robots it drives
(``robots``, their connect ``ramp``, the open files they need: ``capacity``)."""
