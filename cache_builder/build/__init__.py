"""The build side: a dataset → a complete store.

Read top to bottom in the order the data flows:

- :mod:`.sources`, :mod:`.inputs`: where records come from (files, URLs, iterables), cut into
  parts; each record parsed and checked, errors naming the file, line and field;
- :mod:`.tokenize`, :mod:`.batching`: fields as tokens, identical texts once, length buckets;
- :mod:`.plan`: the planning pass, which fixes the store's layout and cuts the work into tasks;
- :mod:`.tasks`: the embedding tasks, each a pure function of the plan (so any executor, any
  worker count, writes the same bytes); :mod:`.core_share` sizes a CPU task's threads;
- :mod:`.distributed`: where tasks run (this process, or a Dask cluster);
- :mod:`.commit`: the lock, resuming, and the manifest that makes a store complete;
- :mod:`.settings`, :mod:`.progress`: what decides a store's content, and what the bar counts;
- :mod:`.engine`: ``precompute`` and ``dry_run``, which tie these together;
  :mod:`.elmo_command` runs it as a drop-in for ``allennlp elmo``.
"""
