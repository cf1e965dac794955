"""The cloud model runner: escalations in, the pipeline's cloud model run on them in batches,
answers out on ``escalations/result`` and into SQL (``worker`` is where it starts)."""
