"""The lab: studies of this project's own implementations (profiles, yardsticks, contests).

It may import the product (``impls``, ``benchmarks``, ``tracking``, ``reports``); the product
never imports it (tests/test_layout.py).
"""
