"""The application layer: what a command does, as one call a notebook can make too.

==========================  =====================================================================================
module                      job
==========================  =====================================================================================
:mod:`~.cohort`             the one cohort runner: slides, shards, folder names, failure isolation, progress
:mod:`~.tile`               ``tile_cohort``: slides -> tile folders with manifests
:mod:`~.segment`            ``segment_cohort``: slides -> OME-Zarr maps, GeoJSON, pictures, ``summary.csv``
:mod:`~.train`              ``run_training``: one training run on this process's device (CPU, GPU, torchrun)
:mod:`~.evaluate`           ``run_evaluation``: a checkpoint scored on a labelled split
:mod:`~.demo`               ``run_demo``: the whole tool on built-in synthetic data
==========================  =====================================================================================

Jobs use every package below them; nothing below imports a job (``tests/test_layering.py``). The command line
(``cli/``) parses options, calls one job and echoes its result.
"""
