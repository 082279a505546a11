"""The speed tools: ``make bench`` (``bench``), the original repository's loop re-written as a
baseline (``original``) and the precision rule's parity check (``parity``). They build on
``dip_lib.core`` and import nothing from ``dip_lib.report``."""
