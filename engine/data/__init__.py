"""Data in: finding pictures (folders, zips, downloads, the built-in digits, camera shots), label rules and folder
levels, the train/valid split, decoding and presizing (with the on-disk pixel cache), augmentation, DataLoaders,
the health check and the cleaner, and `resolve`: a run spec filled in from its data. Imports `engine.store`, never `engine.train` or `engine.results`."""
