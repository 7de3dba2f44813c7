"""Many patients: cohort tables, virtual patients, and ``score-cohort`` on dask.distributed.

``cohort.batch.score_cohort`` runs the per-slide task (``cohort.task``) on a cluster
(``cohort.cluster``) and writes ``patients.csv`` through ``scoring`` (``cohort.patients``).
dask loads only when a cluster starts.
"""
