"""The submission: the self-extracting script whose length is the counted code bytes.

Low level (imported by the export stage): `codebytes` counts the script, `modules` says
which golf_jax modules it packs for a config, `build` writes it. Top level: `script` is
the packed entry (`python submission.py {train,eval}`), which runs the pipeline, and
`python -m golf_jax.submission` (`__main__`) writes a run's script.
"""
