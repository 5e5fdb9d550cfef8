"""Results tables that regenerate: each table in the docs is written by the command that measured
it, between markers naming that command, the commit, the date and the machine, and a check lists
the tables whose code has changed since.

- :mod:`.sections`: every generated section, its page, its command and the paths it depends on.
- :mod:`.markers`: reading and replacing the marked blocks of a page.
- :mod:`.provenance`: where and on what a measurement ran.
- :mod:`.tables`: the tables, rendered from an evaluation folder's ``metrics.json`` /
  ``comparison.json`` (or a sweep's ``sweep.md``).
- :mod:`.staleness`: which sections are older than the last commit touching their paths.

Commands (``python -m uaclm_dist.results``, the Makefile's ``results-*`` targets): ``measure``,
``write``, ``check``.
"""
