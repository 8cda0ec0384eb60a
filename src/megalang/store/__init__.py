"""The bottom layer: files, hashes, manifests, the run folder and checkpoint discovery. Imports no torch and no
other megalang package except `errors` and the version, so every layer above can use it."""
