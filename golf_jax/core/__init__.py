"""Foundations every stage may import: where files are (`paths`), user errors and the one-line
exit (`errors`), the device mesh (`mesh`), progress lines (`progress`), run directories and
atomic writes (`rundir`), multi-host start-up (`multihost`), the persistent compile cache
(`compile_cache`), the command-line convention (`cli`) and output-place checks (`outputs`).

Nothing here imports a pipeline stage.
"""
