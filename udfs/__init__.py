"""Code that runs on Spark executors: plain numpy/torch functions and their Spark wrappers."""
