"""The cache builder's JSON Schemas (package data): input records and the store manifest,
loaded with ``elmo.schemas.load_schema(name, package=__name__)``."""
