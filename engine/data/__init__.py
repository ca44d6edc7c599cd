"""Data in: finding pictures (folders, zips, downloads, the built-in digits, camera shots), label rules and folder
levels, the train/valid split, decoding and presizing (images: one file; decode_pool: many files, in worker
processes; cache: the rows on disk, asked of decode_pool), augmentation, DataLoaders, the health check and the
cleaner, and `resolve`: a run spec filled in from its data. Imports `engine.store`, never `engine.train` or
`engine.results`."""
