"""Data path: manifests, decoding backends, clip sampling, audio features, transforms, datasets."""
