"""Stand-ins in the publishers' real formats, for proving the hub code paths offline.

We cannot download checkpoints or datasets here, so we build local copies in exactly the file sets
the publishers ship (config.json values, tokenizer files in the family's own format, weights in the
publisher's serialisation; datasets in the hub's Parquet layout) with small random weights, laid out
as the Hugging Face cache. ``HF_HOME=<stand-in> HF_HUB_OFFLINE=1`` then drives the same
``from_pretrained(hub_id, revision=...)`` / ``load_dataset(path, name, revision=...)`` calls a GPU box
makes after its download.
"""
