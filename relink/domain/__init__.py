"""Relink's words and pure rules: no I/O, no database, nothing else of Relink."""
