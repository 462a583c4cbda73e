"""ELMoForManyLangs (HIT-SCIR) model directories: the Chinese ELMo most users have.

A directory such as ``zhs.model`` holds ``config.json`` (whose ``config_path`` names the
architecture JSON), ``char.dic`` and ``word.dic`` (token → id), and two torch pickles,
``token_embedder.pkl`` and ``encoder.pkl``. This package reads them into our :class:`~elmo.BiLM`
without running any code they hold:

- :mod:`elmo.efml.dic`: the ``.dic`` reading rules, copied exactly from the original;
- :mod:`elmo.efml.vocab`: tokens → character ids (Unicode code points) and word ids;
- :mod:`elmo.efml.config`: ``config_path`` resolution with the original's fallbacks, and the
  architecture JSON as our options;
- :mod:`elmo.efml.state_dict`: the pickles, read as tensors only, and their names and layouts
  mapped onto our parameters;
- :mod:`elmo.efml.loader`: a directory → a :class:`~elmo.BiLM`, and conversion to a model
  directory of ours that never needs a pickle again.

Everything after the token encoder (the biLSTM, layers, stores) is the same for every family.
The facts these modules rely on (the ids, the swapped word markers, the layouts) are listed in
the project's ``docs/elmoformanylangs-format.md`` fact sheet. The two sample architecture files
in ``configs/`` are copied unchanged from ELMoForManyLangs (MIT licence), for models that do
not ship theirs.
"""


class EfmlFormatError(ValueError):
    """A model directory that is incomplete or does not fit the format; names the file (and key)."""
