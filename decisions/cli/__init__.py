"""The top floor: the ``decisions`` command, the embedded stack, the demo, migrations."""
