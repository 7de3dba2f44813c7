"""Many patients: cohort tables, virtual patients, and ``score-cohort`` on dask.distributed.

``cohort.batch.score_cohort`` runs the per-slide task (``cohort._task``) on a cluster
(``cohort._cluster``) and writes ``patients.csv`` through ``scoring`` (``cohort._patients``).
dask loads only when a cluster starts.
"""
