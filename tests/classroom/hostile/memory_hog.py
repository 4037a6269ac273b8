"""Task 3's answer: ask for far more memory than the sandbox allows."""

attempt("memory_hog", lambda: len(bytearray(TARGETS["hog_bytes"])))  # noqa: F821
report()  # noqa: F821
