"""Built-in techniques: one package per technique, ``plugins/<name>/``, found by scanning this folder."""
