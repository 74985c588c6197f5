"""How the console's search normalises names and IDs before hashing them, in any script."""

from __future__ import annotations

from console.search import name_parts, normalise


def test_names_keep_every_script_and_drop_only_accents_and_punctuation() -> None:
    assert name_parts("SMITH^JOHN") == {"SMITH", "JOHN"}
    assert name_parts("Иванов^Иван") == {"ИВАНОВ", "ИВАН"}
    assert name_parts("Παπαδόπουλος^Νίκος") == {"ΠΑΠΑΔΟΠΟΥΛΟΣ", "ΝΙΚΟΣ"}
    assert name_parts("Øster-Ås^Bjørn") == {"ØSTER", "AS", "BJØRN"}
    assert name_parts("Müller^José") == {"MULLER", "JOSE"}


def test_ids_differ_when_their_letters_do() -> None:
    assert normalise("ÆØ-123") == "ÆØ 123"
    assert normalise("ÆØ-123") != normalise("123")
    assert normalise("  id_42 ") == "ID 42"
