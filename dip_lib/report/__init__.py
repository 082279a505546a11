"""The report: profiles and runs, the results store, the runners (serial and Dask), one module per
experiment (its plan and its analysis), the claims, what the notebooks show and the Sphinx site.
It builds on ``dip_lib.core`` and imports nothing from ``dip_lib.speed``."""
