"""A DigitalOcean API v2 emulator: the subset dropship's provider calls, over
real HTTP on 127.0.0.1, with droplets booted as local machines and faults on
demand. See `state` (droplets, faults, lifetimes) and `server` (HTTP)."""
