"""Default method names, in a module that imports nothing, so that the command's parser (``unveil --help``)
is built without loading torch."""

#: the image method :func:`unveil.explain` and ``unveil explain`` use when none is named
DEFAULT_METHOD = "streak"
#: the table method :func:`unveil.explain_tabular` and ``unveil explain-table`` use when none is named
DEFAULT_TABULAR_METHOD = "lime"
