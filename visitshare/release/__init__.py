"""Release: anonymize, join and publish the validated zone as one consistent shared view.

A release is built in three steps, each callable on its own (the curate DAG maps the middle
one; `visitshare publish` runs them in a process pool):

1. `plan.plan`: which validated files go in, split into shards of whole municipalities;
2. `build.build_shard`: anonymize, k-anonymize, aggregate and suppress one shard; stage it;
3. `publish.finalize`: join the shards, pass the privacy gate, publish atomically
   (Iceberg snapshots + SQL tables + one `releases` row), then tags, report, notice, retention.

Modules in data-flow order: keys, anonymize, outcomes, disclosure (the pure functions);
models, plan, build, publish, notices, retention, releases, shared (the steps and the tables).
"""
