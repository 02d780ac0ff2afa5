"""Repository builders: APT (`apt`) and RPM (`rpm`), plus the published keys (`keys`)."""
