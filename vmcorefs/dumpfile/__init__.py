"""Dump containers: each yields a :class:`~vmcorefs.dumpfile.source.PhysicalSource`."""
