"""The routing evaluation's committed inputs (provider profiles, trace) and its trace generator.

See bench/eval/README.md; the runner is bench/eval_routing.py (`make eval-routing`).
"""
