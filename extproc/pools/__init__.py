"""Self-hosted pools of model servers (`type: pool`): settings, metric scraping and the board
the scraper shares with every worker, DNS resolution and the router stage's endpoint pick.

Modules: `settings` (config), `metrics` (Prometheus text → endpoint load, sans-IO), `board` (the
shared memory file), `dns` (resolution), `scraper` (the one-per-pod scraping process), `picker`
(per worker: board + in-flight counts → the endpoints to try). Import the modules themselves: this
package's `__init__` stays empty so that config loading does not pull in the scraper's I/O.
"""
