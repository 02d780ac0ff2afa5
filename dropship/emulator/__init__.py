"""A DigitalOcean API v2 emulator: the subset dropship uses and what surrounds it, over
real HTTP on 127.0.0.1, as strict as DigitalOcean, with faults on demand. Droplets
are separate machines: containers of a stock Debian 12 image booted by cloud-init.
See `state` (account, droplets, faults), `server` (HTTP), `machines` (container and
process droplets), `image` (the stock image) and `dockerd` (the emulator's dockerd)."""
