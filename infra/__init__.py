"""The infrastructure both sides of the ledger run on, below coordinator/ and shards/.

Configuration, tracing, the event loop, PostgreSQL pools, migrations, the control schema and the
one list of transient database errors, the outbox relay and its parking, and Kafka offset
commits. It imports nothing from coordinator/, shards/ or deploy/; they import it
(tests/unit/test_domain_purity.py holds the layering).
"""
