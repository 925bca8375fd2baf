"""The composition root: the ``switchboard`` command wires core and the platform adapters."""
