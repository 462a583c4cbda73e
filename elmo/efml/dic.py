"""``char.dic`` / ``word.dic``: token → id files, read exactly by the original's rules.

A file is UTF-8, one ``TOKEN<TAB>ID`` entry per line. ELMoForManyLangs reads it like this,
and the ids must be the ones training used, so :func:`read_dic` copies the rules exactly:

1. the text is cut into lines where Python's ``str.splitlines`` cuts (a ``codecs`` reader's
   line iteration: also at U+2028, U+2029, U+0085, ``\\x0b``, ``\\x0c``, ``\\x1c``–``\\x1e``);
2. each line is ``str.strip()``-ed: every Unicode whitespace at both ends goes, TAB and
   U+3000 included;
3. the rest is split on TAB. A line left with one field holds the id of U+3000 (IDEOGRAPHIC
   SPACE), whose key the strip removed; so every whitespace key reads back as U+3000;
4. otherwise field 1 is the key and ``int(field 2)`` its id.

Where the original lets a later duplicate win silently or fails later on a bad id, we stop
with the file and line (:class:`DictionaryError`): more than two fields, an id that is not an
integer, a key given twice, an id outside ``0 .. n-1`` or given twice, text that is not
UTF-8. Training writes ids ``0 .. n-1`` in file order, and a duplicate key leaves the
embedding with more rows than the dictionary has keys, which the original cannot load either.
"""

from __future__ import annotations

from pathlib import Path

IDEOGRAPHIC_SPACE = "\u3000"


class DictionaryError(ValueError):
    """A ``.dic`` file that is missing or breaks the format; the message names file and line."""


def read_dic(path: str | Path) -> dict[str, int]:
    """The entries of a ``.dic`` file, key → id, in file order.

    Raises:
        DictionaryError: the file is missing, or a line is malformed or a duplicate.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DictionaryError(f"{path}: file not found") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DictionaryError(f"{path}:{line}: not UTF-8 ({e.reason} at byte {e.start})") from None
    table: dict[str, int] = {}
    line_of: dict[str, int] = {}
    key_of_id: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.strip().split("\t")
        if len(fields) == 1:
            fields.insert(0, IDEOGRAPHIC_SPACE)
        if len(fields) != 2:
            raise DictionaryError(f"{path}:{number}: expected TOKEN<TAB>ID, found {len(fields)} "
                                  f"tab-separated fields in {line!r}")
        key, raw_id = fields
        try:
            token_id = int(raw_id)
        except ValueError:
            raise DictionaryError(f"{path}:{number}: id {raw_id!r} is not an integer") from None
        if key in table:
            raise DictionaryError(f"{path}:{number}: {key!r} is already on line {line_of[key]}"
                                  + _whitespace_note(key))
        if token_id in key_of_id:
            raise DictionaryError(f"{path}:{number}: id {token_id} of {key!r} is already the id of "
                                  f"{key_of_id[token_id]!r} (line {line_of[key_of_id[token_id]]})")
        table[key], line_of[key], key_of_id[token_id] = token_id, number, key
    for key, token_id in table.items():
        if not 0 <= token_id < len(table):
            raise DictionaryError(f"{path}:{line_of[key]}: id {token_id} of {key!r} is outside "
                                  f"0..{len(table) - 1} (the file has {len(table)} entries)")
    return table


def _whitespace_note(key: str) -> str:
    if key != IDEOGRAPHIC_SPACE:
        return ""
    return " (every whitespace entry reads as U+3000, as in ELMoForManyLangs)"


def write_dic(table: dict[str, int], path: str | Path) -> None:
    """Write ``table`` in id order, so that :func:`read_dic` gives it back exactly.

    Raises:
        DictionaryError: a key that the reading rules would change (one with a line break, a
            TAB, or whitespace at an end other than the U+3000 key).
    """
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for key, token_id in sorted(table.items(), key=lambda item: item[1]):
            f.write(f"{key}\t{token_id}\n")
    if read_dic(path) != table:
        raise DictionaryError(f"{path}: some keys cannot be written in the .dic format "
                              "(a line break, a TAB, or whitespace at either end)")
