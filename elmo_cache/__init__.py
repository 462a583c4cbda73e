"""The ``elmo-cache`` command line (:mod:`elmo_cache.cli`), installed as a console script."""
