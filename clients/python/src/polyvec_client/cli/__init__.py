"""The ``polyvec import | export | search | collections`` command line (see :mod:`.main`)."""
