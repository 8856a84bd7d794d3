"""The result bundle: its file names (``layout``), atomic publishing (``publish``), the manifest (``manifest``) and
the one reader (``reader``). Import the submodules; this package imports nothing, so low layers (train, features)
can use ``layout`` and ``publish`` without loading the reader's pandas and YAML."""
