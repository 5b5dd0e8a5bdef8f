"""Tools beside the library: `nanomoni demo` (plain install) and the load generator,
plots and process helpers behind the `tools` extra (`pip install nanomoni[tools]`)."""
