"""Static HTML reports of a search's run folder, a NAS-Bench-201 bench folder or a Single-Path
search folder.

:func:`~autoshrink.report.folder.write_report` looks at the folder and writes
``FOLDER/report/index.html`` with SVG plots and cell pictures beside it: a search run
(``config.json`` + ``journal.jsonl``; it may still be running) gets
:func:`~autoshrink.report.run_report.write_run_report`, a bench output (``bench.json``) gets
:func:`~autoshrink.report.bench_report.write_bench_report`, a Single-Path folder
(``decisions.jsonl``) :func:`~autoshrink.report.singlepath_report.write_singlepath_report`.
The page opens from disk: no server, no scripts, relative image links. :mod:`.picture` draws
cells (Graphviz, or text).
"""
